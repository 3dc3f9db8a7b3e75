"""The build's training: the settings that cover every device profile, the merged run, and the
adapter-branch run beside it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from toolchain.data import load_dataset
from toolchain.io import atomic_write_json
from toolchain.models import default_model_path
from toolchain.profiles import DeviceProfile


def training_settings(profiles: Sequence[DeviceProfile], specs=None, **overrides):
    """TrainSettings whose bits and grids cover every choice `profiles` allow (one adapter serves all),
    training with every embedding table format they ship (each learns its table scales).

    The grids are exactly the variants of the search's union space, so every configuration the search
    proposes during training and selection is one the run can generate.
    """
    from toolchain.adapter import Grid, TrainSettings
    from toolchain.search.space import SearchSpace

    if not profiles:
        return TrainSettings(**overrides)
    union = SearchSpace.union([SearchSpace.from_profile(p, specs or []) for p in profiles])
    grids = [Grid(scheme=v.scheme, block_size=v.block_size) for v in union.variants()]
    tables = list(dict.fromkeys(p.embeddings for p in profiles))
    return TrainSettings(bits=list(union.bits), grids=grids, tables=tables, **overrides)


def training_source(profiles: Sequence[DeviceProfile], model_dir: Path, label_names, *, seed: int, source_cls=None):
    """The configuration set the build's adapter trains on: a ParetoConfigSource (or `source_cls`, a
    subclass) over every profile's search profile (its budget left after the embedding tables, head, biases
    and norms: toolchain.whole_model.search_profiles), its sensitivity probed per module type."""
    from toolchain.models import load_model, quantizable_layers
    from toolchain.search.refine import ParetoConfigSource
    from toolchain.search.sensitivity import module_type
    from toolchain.whole_model import search_profiles

    net = load_model(model_dir, label_names)[0]
    specs = quantizable_layers(net)
    cls = source_cls or ParetoConfigSource
    return cls.for_profiles(search_profiles(profiles, net, specs), specs, seed=seed, probe_group=module_type)


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

    dataset = load_dataset(data)
    model_dir = Path(model) if model else default_model_path()
    overrides = {"seed": seed, "forward": forward} | ({"steps": steps} if steps is not None else {})
    overrides |= {"rank": rank} if rank else {}
    settings = training_settings(profiles, **overrides)
    source = training_source(profiles, model_dir, dataset.label_names, seed=seed) if profiles else None
    run = train(model_dir, dataset, out, settings, config_source=source, progress=progress)
    if source is not None and source.history:
        atomic_write_json(training_set_path(out), source.history)
    return run


def training_set_path(run_dir: Path) -> Path:
    """Where train_run records a run's training set per refinement round (beside the run directory)."""
    return Path(run_dir).with_name(f"{Path(run_dir).name}.training_set.json")


def train_branch_run(merged, model_dir: Path, dataset, profiles: Sequence[DeviceProfile], *, progress=True):
    """The adapter-branch run for the (search) profiles that allow a branch (None when none does, or none can afford
    one): their bits and grids, `forward="branch"`, `merged`'s seed, rank and float fine-tune (copied, not
    recomputed), half its steps, on the base configurations those profiles can ship beside a branch
    (toolchain.build.branch_training). `model_dir` and `dataset` (a TextDataset) are the merged run's."""
    from toolchain.adapter import ForwardMode, train
    from toolchain.adapter.run_files import share_float_stages
    from toolchain.build.branch_training import branch_run_dir, branch_steps, branch_training_source

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
