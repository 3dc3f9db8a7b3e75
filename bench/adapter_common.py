"""Shared pieces of the adapter benchmarks: machine info, runs that share one float stage, metrics.

Several adapter variants are compared on one float fine-tune: `float_stage_run` trains it once (a run with
0 adapter steps) and `seed_run_dir` hard-links (or copies) its float model, logits and quantized base into a new run
directory, whose training then skips those stages (they only depend on TrainSettings.float_digest(),
bits and grids, which `seed_run_dir` checks).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
from record import machine_info  # noqa: F401  (the benches import it from here)
from stats import mcnemar

from toolchain.adapter import Run, TrainSettings, run_files, train
from toolchain.bitconfig import BitConfig
from toolchain.build.branch_training import BRANCH_RUN_INFIX
from toolchain.data import TextDataset
from toolchain.evaluate import encode, metrics
from toolchain.io import link_or_copy
from toolchain.quant.model import apply_quantized

SHARED = (run_files.FLOAT_DIR, run_files.LOGITS, run_files.BASE, run_files.DATA, run_files.TIMINGS)


def find_run(dist: Path, hint: str = "", *, branch: bool = False) -> Path:
    """The one finished training run of an `edgeq build --out` directory (`hint`: what to do when not one):
    the merged run, or with `branch` the adapter-branch run beside it (toolchain.build.branch)."""
    runs = [
        d
        for d in sorted((dist / ".edgeq").glob("run-*"))
        if Run.is_complete(d) and (BRANCH_RUN_INFIX in d.name) == branch
    ]
    if len(runs) != 1:
        kind = "adapter-branch" if branch else "merged"
        raise SystemExit(f"{dist}/.edgeq: {len(runs)} finished {kind} runs{hint}")
    return runs[0]


def float_stage_run(model_dir: Path, ds: TextDataset, root: Path, settings: TrainSettings) -> Path:
    """A run with 0 adapter steps: float fine-tune, logits and quantized base, reusable by variants."""
    run_dir = root / f"float-{settings.float_digest()}-{settings.model_copy(update={'steps': 0}).digest()}"
    train(model_dir, ds, run_dir, settings.model_copy(update={"steps": 0}), progress=True)
    return run_dir


def seed_run_dir(float_dir: Path, run_dir: Path, settings: TrainSettings) -> None:
    """Put the float stage's outputs into `run_dir` (unless already there): hard links where the file system
    allows (the quantized base alone is 390 MB on MiniLM; training replaces files by rename, never in place,
    so a link cannot change the donor), else copies."""
    donor = TrainSettings.model_validate_json((float_dir / run_files.SETTINGS).read_text())
    same = (donor.float_digest(), donor.bits, donor.grids) == (
        settings.float_digest(),
        settings.bits,
        settings.grids,
    )
    if not same:
        raise ValueError(f"{float_dir}: float stage of other settings; cannot seed {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        src, dst = float_dir / name, run_dir / name
        if dst.exists():
            continue
        if src.is_dir():
            shutil.copytree(src, dst, copy_function=link_or_copy)
        else:
            link_or_copy(src, dst)


def train_variant(
    model_dir: Path, ds: TextDataset, float_dir: Path, run_dir: Path, settings: TrainSettings, **kwargs
) -> tuple[Run, float]:
    """(trained run, wall seconds of this call) for one variant, reusing the float stage."""
    seed_run_dir(float_dir, run_dir, settings)
    t0 = time.perf_counter()
    run = train(model_dir, ds, run_dir, settings, **kwargs)
    return run, time.perf_counter() - t0


def _logits(model, run: Run, texts: list[str], forward=None) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            inputs = encode(run.tokenizer, texts[i : i + 32], run.settings.max_length)
            out.append(forward(inputs) if forward else model(**inputs).logits)
    return torch.cat(out).float()


def split_of(run: Run, name: str):
    return {"val": run.splits.val, "test": run.splits.test}[name]


def coa_logits(run: Run, config: BitConfig, split: str, rank: int | None = None) -> torch.Tensor:
    """Logits of the shipped integer model of `config` (what `Run.score` measures) on a split."""
    return _logits(run.quantized_model(config, rank), run, split_of(run, split).texts)


def ptq_logits(run: Run, config: BitConfig, split: str) -> torch.Tensor:
    """Logits of the MSE-clipped post-training quantization of the float fine-tuned model (the strongest PTQ
    baseline) on a split."""
    return _logits(apply_quantized(run.float_model(), run.ptq_weights(config)), run, split_of(run, split).texts)


def float_head_logits(run: Run, config: BitConfig, split: str) -> torch.Tensor:
    """Logits of `config`'s shipped integers and scales under the float fine-tune's own head instead of the
    head trained jointly with the adapter."""
    return _logits(apply_quantized(run.float_model(), run.generate(config)), run, split_of(run, split).texts)


def split_metrics(run: Run, logits: torch.Tensor, split: str) -> dict:
    """Accuracy, macro-F1, agreement with and KL from the float model, of logits on a split."""
    return metrics(logits, split_of(run, split).labels, run.float_logits(split)).to_dict()


def coa_metrics(run: Run, config: BitConfig, split: str, rank: int | None = None) -> dict:
    return split_metrics(run, coa_logits(run, config, split, rank), split)


def ptq_metrics(run: Run, config: BitConfig, split: str) -> dict:
    return split_metrics(run, ptq_logits(run, config, split), split)


def paired_test(a: torch.Tensor, b: torch.Tensor, labels: list[int]) -> dict:
    """McNemar's exact test (stats.mcnemar) of two classifiers' logits on the same documents."""
    r = mcnemar(a.argmax(-1).tolist(), b.argmax(-1).tolist(), labels)
    return {"only_a_right": r["only_a_right"], "only_b_right": r["only_b_right"], "p_value": round(r["p_value"], 4)}


def training_forward_metrics(run: Run, config: BitConfig, split: str, rank: int | None = None) -> dict:
    """The training-time forward (for a branch run: the float side adapter, before any rounding)."""
    ds = split_of(run, split)
    model = run.adapter_model

    def forward(inputs):
        model.set_config(config, rank)
        return model(**inputs)

    logits = _logits(None, run, ds.texts, forward)
    return metrics(logits, ds.labels, run.float_logits(split)).to_dict()


def changed_fraction(run: Run, config: BitConfig, rank: int | None = None) -> float:
    """Fraction of integers the adapter moved away from the MSE-clipped base."""
    got, base = run.generate(config, rank), run.ptq_weights(config)
    changed = sum((got[n].q != base[n].q).sum().item() for n in got)
    return changed / sum(q.q.numel() for q in got.values())


def r2(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}
