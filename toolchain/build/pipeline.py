"""`edgeq build`: profiles -> one training run -> per-device search -> merge, export, validate, package."""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from toolchain.adapter import run_files
from toolchain.bitconfig import BitConfig
from toolchain.build.branch import MERGED
from toolchain.build.device import BuildResult, DeviceContext, package_device
from toolchain.build.device_search import search_docs, search_run, write_search
from toolchain.build.fingerprint import dataset_sha256, model_sha256, run_key
from toolchain.build.report import index_report
from toolchain.build.training import train_branch_run, train_run, training_settings
from toolchain.data import TextDataset, load_dataset
from toolchain.errors import BadInputError, ValidationFailedError
from toolchain.io import atomic_write_json, atomic_write_text, recover_staged_sets, require_writable, staged_set
from toolchain.memory import stage_peak
from toolchain.models import LayerSpec, default_model_path, load_checkpoint, quantizable_layers
from toolchain.profiles import DeviceProfile, profiles_or_default
from toolchain.provenance import source_hash

STATE_DIR = ".edgeq"  # inside OUT: cached runs and the build lock


@dataclass(frozen=True)
class BuildSettings:
    """What `edgeq build` was asked to do; empty / None means the bundled default."""

    profiles: list[Path] = field(default_factory=list)
    model: Path | None = None
    data: str | None = None
    out: Path = Path("dist")
    steps: int | None = None
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class Inputs:
    """Everything checked before any long work starts (bad input exits 2 here)."""

    profiles: list[DeviceProfile]
    search_profiles: list[DeviceProfile]  # the same, budgets left for the searched layers (whole_model)
    model_dir: Path
    dataset: TextDataset
    specs: list[LayerSpec]
    model_hash: str


def check_inputs(s: BuildSettings) -> Inputs:
    from toolchain.exporters.float_graph import check_exportable
    from toolchain.whole_model import search_profiles

    profiles = profiles_or_default(s.profiles)
    dataset = load_dataset(s.data)
    model_dir = Path(s.model) if s.model else default_model_path()
    ckpt = load_checkpoint(model_dir, dataset.label_names)
    model, tokenizer = ckpt.model, ckpt.tokenizer
    if ckpt.fine_tuned:
        print(
            f"{model_dir}: holds a trained classifier for {dataset.label_names}: it is the float reference, "
            "no float fine-tune",
            file=sys.stderr,
        )
    specs = quantizable_layers(model)
    search = search_profiles(profiles, model, specs)  # a budget nothing can meet names the smallest cost
    check_exportable(model, tokenizer, profiles, model_dir)
    return Inputs(profiles, search, model_dir, dataset, specs, model_sha256(model_dir))


def build(s: BuildSettings) -> list[BuildResult]:
    """Run the whole build; raises ValidationFailedError (exit 3) after packaging every device."""
    from toolchain.console import print_results

    t0 = time.perf_counter()
    require_writable(s.out, "--out")
    inputs = check_inputs(s)
    state = Path(s.out) / STATE_DIR
    require_writable(state, "--out")  # a state directory left by another user
    state.mkdir(parents=True, exist_ok=True)
    stages: dict = {}
    try:
        with FileLock(state / "build.lock", timeout=0):
            if moved := recover_staged_sets(s.out, state):  # a build killed outright mid-swap: finish it
                print(f"{s.out}: finished an interrupted build's swap of {', '.join(moved)}", file=sys.stderr)
            with staged_set(s.out, state) as staged:  # this build's outputs appear together or not at all
                results = _build_locked(inputs, s, state, staged, stages)
                atomic_write_json(staged / "build.json", _build_record(time.perf_counter() - t0, stages))
    except Timeout as exc:
        raise BadInputError(f"{s.out}: another edgeq build is writing here (lock {state / 'build.lock'})") from exc
    results = [dataclasses.replace(r, package=Path(s.out) / r.package.name) for r in results]
    print_results(results)
    failed = [r.profile for r in results if not r.passed]
    if failed:
        raise ValidationFailedError(f"{name}: failed validation (see {s.out}/{name}/report.html)" for name in failed)
    return results


def run_dir_for(inputs: Inputs, s: BuildSettings, state: Path) -> Path:
    """Cached run directory keyed by the model, the data, the training settings, the profiles' weight
    choices (the training configurations are drawn over them) and the training code's hash: a run is
    reused only by a build that would compute it the same way."""
    overrides = {"seed": s.seed} | ({"steps": s.steps} if s.steps is not None else {})
    settings = training_settings(inputs.profiles, **overrides)
    weights = "|".join(sorted({p.weights.model_dump_json() for p in inputs.profiles}))
    key = run_key(
        inputs.model_hash, dataset_sha256(inputs.dataset), settings.model_dump_json(), weights, run_files.code_hash()
    )
    return state / f"run-{key}"


def _build_locked(inputs: Inputs, s: BuildSettings, state: Path, staged: Path, stages: dict) -> list[BuildResult]:
    """Train, search, package (the outputs into `staged`, swapped into OUT once all are written); fills
    `stages` with wall seconds per stage (training: as its run recorded)."""
    t = time.perf_counter()
    with stage_peak(stages, "training"):
        run = train_run(
            inputs.model_dir,
            s.data,
            run_dir_for(inputs, s, state),
            steps=s.steps,
            seed=s.seed,
            profiles=inputs.profiles,
            progress=s.progress,
        )
    stages["training"] = {"wall_s": round(time.perf_counter() - t, 1), "run_stages": run.info["timings_s"]}
    t = time.perf_counter()
    with stage_peak(stages, "search"):
        docs = search_docs(run)
        result = search_run(run, inputs.search_profiles, seed=s.seed, progress=s.progress, docs=docs)
    stages["search_wall_s"] = round(time.perf_counter() - t, 1)
    write_search(result, inputs.search_profiles, staged / "search.json")
    ctx = DeviceContext(
        run=run,
        model_name=inputs.model_dir.name if s.model else "all-MiniLM-L6-v2",
        front_svg=(staged / "search.svg").read_text(encoding="utf-8"),
    )
    with stage_peak(stages, "branch"):
        choices, branch_ctx = _branch_variants(run, inputs, s, result, ctx, stages, docs)
    jobs = _device_jobs(inputs.profiles, result, choices, ctx, branch_ctx)
    del docs, result, branch_ctx, run  # each job holds what its package needs: the branch run only its own
    results = _package_all(jobs, staged, stages, s.progress)
    manifests = [r.manifest for r in results]
    summary = [m.model_dump(mode="json", exclude={"test_ids", "files", "bit_config"}) for m in manifests]
    atomic_write_json(staged / "summary.json", {"devices": summary})
    atomic_write_text(staged / "index.html", index_report(manifests, ctx.front_svg))
    return results


@dataclass(frozen=True)
class _DeviceJob:
    """One device's package to make: the run it is generated from, its configuration and variant."""

    profile: DeviceProfile
    ctx: DeviceContext
    config: BitConfig
    variant: dict
    from_branch: bool = False


def _device_jobs(profiles, result, choices: dict, ctx: DeviceContext, branch_ctx) -> list[_DeviceJob]:
    """Each profile's package, in profile order: the searched configuration with merged integers, or for a
    profile that allows a branch, what `_branch_variants` chose (generated from the branch run if it won)."""
    merged = {"weights": MERGED, "rank": ctx.run.settings.rank}
    jobs = []
    for p in profiles:
        choice = choices.get(p.name)
        if choice is None:
            jobs.append(_DeviceJob(p, ctx, result.selection(p.name).config, merged))
        else:
            where = branch_ctx if choice.use_branch else ctx
            jobs.append(_DeviceJob(p, where, choice.chosen.config, choice.variant(), choice.use_branch))
    return jobs


def _package_all(jobs: list[_DeviceJob], staged: Path, stages: dict, progress: bool) -> list[BuildResult]:
    """Package every job; results in the jobs' order. Packages generated from the branch run go first, and
    each job is dropped once packaged, so the branch run (its own float model, adapter and tables) is
    freed before the others start (each stage starts with `release_freed`)."""
    order = sorted(range(len(jobs)), key=lambda i: (not jobs[i].from_branch, i))
    done: dict[int, BuildResult] = {}
    bar = tqdm(total=len(jobs), desc="export + validate", unit="device", disable=not progress, dynamic_ncols=True)
    for i in order:
        job, jobs[i] = jobs[i], None
        t = time.perf_counter()
        with stage_peak(stages, f"export_validate/{job.profile.name}"):
            done[i] = package_device(job.ctx, job.profile, job.config, job.variant, staged)
        stages.setdefault("export_validate_wall_s", {})[job.profile.name] = round(time.perf_counter() - t, 1)
        del job
        bar.update(1)
    bar.close()
    return [done[i] for i in sorted(done)]


def _branch_variants(run, inputs: Inputs, s: BuildSettings, result, ctx: DeviceContext, stages: dict, docs):
    """For each profile that allows an adapter branch, the merged-or-branch choice (toolchain.build.branch),
    and the device context of the branch run; ({}, None) when no profile allows one. When none can afford
    one, no branch run is trained and each such profile records that no rank fit. `docs`: the search's
    (screen, confirm) documents; the branch candidates are screened and the best confirmed on them."""
    from toolchain.build.branch import VariantChoice, branch_ranks, choose_variant

    t = time.perf_counter()
    brun = train_branch_run(run, inputs.model_dir, inputs.dataset, inputs.search_profiles, progress=s.progress)
    if brun is None:
        unfit = dict.fromkeys(branch_ranks(run.settings.rank))
        rank = run.settings.rank
        return {
            p.name: VariantChoice(p.name, rank, result.selection(p.name), None, unfit)
            for p in inputs.search_profiles
            if p.adapter_branch
        }, None
    stages["branch_training"] = {"wall_s": round(time.perf_counter() - t, 1), "run_stages": brun.info["timings_s"]}
    t = time.perf_counter()
    choices = {
        p.name: choose_variant(
            p,
            result.selection(p.name),
            run.settings.rank,
            inputs.specs,
            docs[0].scorer(brun, p.embeddings),
            result.costs,
            branch_ranks(brun.settings.rank),
            confirm=docs[1].scorer(brun, p.embeddings),
            seed=s.seed,
        )
        for p in inputs.search_profiles
        if p.adapter_branch
    }
    stages["branch_search_wall_s"] = round(time.perf_counter() - t, 1)
    return choices, dataclasses.replace(ctx, run=brun)


def _build_record(wall_s: float, stages: dict) -> dict:
    """How long this build took, stage by stage, and where (the README's timing comes from here).

    `stages["training"]["wall_s"]` is this build's time in training (seconds when the run was cached);
    `run_stages` are the times the run recorded when it was trained. `stages["peak_rss_mb"]`: each stage's
    peak resident memory (toolchain.memory)."""
    return {
        "wall_s": round(wall_s, 1),
        "source_hash": source_hash(),  # which code built it (toolchain.provenance)
        "stages": stages,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average": os.getloadavg()[0],
    }
