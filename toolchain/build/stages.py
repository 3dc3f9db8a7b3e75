"""The build's stages as library calls; the CLI's train/quantize/search/export commands call these."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from toolchain.bitconfig import BitConfig, config_from_bits
from toolchain.data import load_dataset
from toolchain.errors import BadInputError
from toolchain.io import atomic_write_json
from toolchain.models import default_model_path
from toolchain.profiles import DeviceProfile, EmbeddingQuant, default_profiles_dir, load_profiles


def training_settings(profiles: Sequence[DeviceProfile], specs=None, **overrides):
    """TrainSettings whose bits and grids cover every choice `profiles` allow (one adapter serves all),
    training with every embedding table format they ship (each learns its table scales).

    The grids are exactly the variants of the search's union space, so every configuration the search
    proposes during training and selection is one the run can generate.
    """
    from toolchain.adapter import Grid, TrainSettings
    from toolchain.search import SearchSpace

    if not profiles:
        return TrainSettings(**overrides)
    union = SearchSpace.union([SearchSpace.from_profile(p, specs or []) for p in profiles])
    grids = [Grid(scheme=v.scheme, block_size=v.block_size) for v in union.variants()]
    tables = list(dict.fromkeys(p.embeddings for p in profiles))
    return TrainSettings(bits=list(union.bits), grids=grids, tables=tables, **overrides)


def train_run(
    model: Path | None,
    data: str | None,
    out: Path,
    *,
    steps: int | None = None,
    rank: int | None = None,
    seed: int = 0,
    profiles: Sequence[DeviceProfile] = (),
    progress: bool = True,
    forward: str = "merged",
):
    """Train (or resume, or reuse) the run in `out`: float fine-tune, quantized base, adapter (`forward`:
    "merged" integers, or "branch", frozen integers plus an adapter branch; TrainSettings.forward).
    `profiles` are device profiles: the training set is drawn around their search budgets
    (toolchain.whole_model.search_profiles)."""
    from toolchain.adapter import train
    from toolchain.models import load_model, quantizable_layers
    from toolchain.search import ParetoConfigSource
    from toolchain.search.sensitivity import module_type
    from toolchain.whole_model import search_profiles

    dataset = load_dataset(data)
    model_dir = Path(model) if model else default_model_path()
    overrides = {"seed": seed, "forward": forward} | ({"steps": steps} if steps is not None else {})
    overrides |= {"rank": rank} if rank else {}
    settings = training_settings(profiles, **overrides)
    source = None
    if profiles:
        net = load_model(model_dir, dataset.label_names)[0]
        specs = quantizable_layers(net)
        budgets = search_profiles(profiles, net, specs)
        source = ParetoConfigSource.for_profiles(budgets, specs, seed=seed, probe_group=module_type)
    run = train(model_dir, dataset, out, settings, config_source=source, progress=progress)
    if source is not None and source.history:
        atomic_write_json(Path(out).parent / f"{Path(out).name}.training_set.json", source.history)
    return run


def train_branch_run(merged, model_dir: Path, dataset, profiles: Sequence[DeviceProfile], *, progress=True):
    """The adapter-branch run for the (search) profiles that allow a branch (None when none does, or none can afford
    one): their bits and grids, `forward="branch"`, `merged`'s seed, rank and float fine-tune (copied, not
    recomputed), half its steps, on the base configurations those profiles can ship beside a branch
    (toolchain.build.branch). `model_dir` and `dataset` (a TextDataset) are the merged run's."""
    from toolchain.adapter import ForwardMode, train
    from toolchain.adapter.stages import share_float_stages
    from toolchain.build.branch import branch_run_dir, branch_steps, branch_training_source

    allowed = [p for p in profiles if p.adapter_branch]
    if not allowed:
        return None
    keep = {"seed": merged.settings.seed, "steps": branch_steps(merged.settings.steps), "rank": merged.settings.rank}
    settings = training_settings(allowed, forward=ForwardMode.BRANCH, **keep)
    source = branch_training_source(allowed, merged.specs, settings.bits, settings.grids)
    if source is None:
        return None
    if (settings.float_digest(), settings.effective_train_length) != (
        merged.settings.float_digest(),
        merged.settings.effective_train_length,
    ):
        raise ValueError("the branch run's float stage differs from the merged run's; it cannot share it")
    out = branch_run_dir(merged.run_dir, settings.digest(), allowed)
    share_float_stages(merged.run_dir, out)
    return train(model_dir, dataset, out, settings, config_source=source, progress=progress)


def quantize_table(run_dir: Path, bits: Sequence[int], roundings: Sequence[str], block_size: int | None) -> list[dict]:
    """Post-training quantization of the run's float fine-tune at uniform bit-widths, scored on the test split."""
    from toolchain.adapter import Run
    from toolchain.evaluate import metrics, predict_logits
    from toolchain.quant.model import Rounding, quantize_model

    run = Run.load(run_dir)
    float_model, test = run.float_model(), run.splits.test
    reference = run.float_logits("test")
    rows = []
    print(f"float fine-tune: {run.float_accuracy:.2f} % test accuracy")
    for b in bits:
        config = config_from_bits(run.specs, b, block_size=block_size)
        for r in roundings:
            qmodel = quantize_model(float_model, config, Rounding(r))
            m = metrics(
                predict_logits(qmodel, run.tokenizer, test.texts, run.settings.max_length), test.labels, reference
            )
            rows.append({"bits": b, "rounding": r, **m.to_dict()})
            print(f"{b} bits {r:>3}: accuracy {m.accuracy:6.2f} %  agreement {m.agreement:6.2f} %  KL {m.kl:.4f}")
    return rows


SEARCH_DOCS = 56  # validation documents per score, classes interleaved: 1.4-1.8 s per score on 2 cores


def search_run(run, profiles: Sequence[DeviceProfile], *, seed: int = 0, progress: bool = True, scorer_for=None):
    """Best configuration per profile, scored with the trained adapter on a fixed validation subset.
    `profiles` are search profiles (toolchain.whole_model.search_profiles / `run_search_profiles`).

    Each configuration is scored with the embedding tables its profile ships (`run.tables`), so profiles
    are searched in groups of one table format each; the shared front's evaluations are shared out over
    the groups by their number of profiles. The sensitivities the run's training measured (by module type,
    the configurations the search would probe) seed every group; a run without them is probed once, in the
    first group (7 more scores on MiniLM). `scorer_for(table)` replaces the default
    `validation_scorer(run, SEARCH_DOCS, table)` (benches wrap it to record what was scored)."""
    import dataclasses

    from tqdm.auto import tqdm

    from toolchain.search import SearchSettings, merge_results, select_configs
    from toolchain.search.sensitivity import Sensitivity

    sensitivity = None if run.sensitivity is None else Sensitivity.from_dict(run.sensitivity)
    scorer_for = scorer_for or (lambda table: validation_scorer(run, SEARCH_DOCS, table))
    groups: dict[EmbeddingQuant | None, list[DeviceProfile]] = {}
    for p in profiles:
        groups.setdefault(p.embeddings, []).append(p)
    settings, parts = SearchSettings(seed=seed), []
    with tqdm(desc="search", unit="config", disable=not progress, dynamic_ncols=True) as bar:
        for group in groups.values():
            scorer = scorer_for(group[0].embeddings)

            def score(config: BitConfig, scorer=scorer):
                out = scorer(config)
                bar.update(1)
                return out

            share = max(1, round(settings.front_evals * len(group) / len(profiles)))
            part = select_configs(
                group,
                run.specs,
                score,
                sensitivity=sensitivity,
                settings=dataclasses.replace(settings, front_evals=share),
            )
            sensitivity = sensitivity or part.sensitivity
            parts.append(part)
    return merge_results(parts, [p.name for p in profiles])


def validation_scorer(run, n_docs: int, table=None):
    """Metrics of a configuration's merged integers on the first `n_docs` validation documents (the split
    interleaves classes, so they are class-balanced), with the embedding tables in format `table` (an
    EmbeddingQuant; None: float)."""
    from toolchain.evaluate import metrics, predict_logits

    val = run.splits.val
    texts, labels = val.texts[:n_docs], val.labels[:n_docs]
    reference = run.float_logits("val", range(len(texts)))

    def score(config: BitConfig):
        logits = predict_logits(run.quantized_model(config, table=table), run.tokenizer, texts, run.settings.max_length)
        return metrics(logits, labels, reference)

    return score


def write_search(result, profiles: Sequence[DeviceProfile], out: Path) -> None:
    """The selections and the front as JSON, the plot as PNG and SVG beside it."""
    from toolchain.search.plot import plot_front

    atomic_write_json(out, result.to_dict())
    plot_front(result, Path(out).with_suffix(""), profiles)


def profiles_or_default(paths: Sequence[Path] | None) -> list[DeviceProfile]:
    return load_profiles(list(paths) if paths else [default_profiles_dir()])


def run_search_profiles(run, profiles: Sequence[DeviceProfile]) -> list[DeviceProfile]:
    """The search profiles of device `profiles` for a run's model."""
    from toolchain.whole_model import search_profiles

    return search_profiles(profiles, run.float_model(), run.specs)


def config_for(run, profile: DeviceProfile, bits_config: Path | None, seed: int = 0) -> BitConfig:
    """The given BitConfig file, or the searched best one for `profile`."""
    if bits_config is not None:
        return BitConfig.load(bits_config)
    result = search_run(run, run_search_profiles(run, [profile]), seed=seed)
    return result.selection(profile.name).config


def single_profile(path: Path) -> DeviceProfile:
    profiles = load_profiles([path])
    if len(profiles) != 1:
        raise BadInputError(f"{path}: expected one profile file, found {len(profiles)} profiles")
    return profiles[0]


def export_device(run_dir: Path, profile_path: Path, bits_config: Path | None, out: Path):
    """One device package from a trained run: the given BitConfig or the searched one for the profile."""
    from toolchain.adapter import Run
    from toolchain.build.branch import BRANCH, MERGED
    from toolchain.build.device import DeviceContext, package_device

    profile = single_profile(profile_path)
    run = Run.load(run_dir)
    config = config_for(run, profile, bits_config)
    ctx = DeviceContext(run, f"fine-tuned model of {run.run_dir.name}", front_svg=None)
    branch = config.branch_rank is not None
    variant = {"weights": BRANCH if branch else MERGED, "rank": config.branch_rank if branch else run.settings.rank}
    return package_device(ctx, profile, config, variant, out)
