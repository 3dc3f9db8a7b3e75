"""The build's search: each device profile's configuration, scored with the trained run's merged
integers on a fixed validation subset, and the search's output files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from toolchain.bitconfig import BitConfig
from toolchain.io import atomic_write_json
from toolchain.profiles import DeviceProfile, EmbeddingQuant

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
