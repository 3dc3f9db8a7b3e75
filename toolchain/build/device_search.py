"""The build's search: each device profile's configuration, scored with the trained run's merged
integers on the whole validation split (KL to the float model, and accuracy), and the search's output files.

Per-layer costs come from the float model's Fisher information on FISHER_DOCS validation documents
(toolchain.search.fisher); every score runs the validation documents pre-tokenised, in batches of similar
length (what does not change between candidates is computed once).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from toolchain.bitconfig import BitConfig
from toolchain.io import atomic_write_json
from toolchain.profiles import DeviceProfile, EmbeddingQuant

FISHER_DOCS = 256  # validation documents the Fisher information is computed on
SEARCH_SECONDS = 90.0  # scoring time of one build's search, shared out over the table-format groups
TIE_SE = 2.0  # accuracy differences under this many standard errors are ties (Rule.KL)


def search_run(
    run,
    profiles: Sequence[DeviceProfile],
    *,
    seed: int = 0,
    progress: bool = True,
    scorer_for=None,
    settings=None,
    costs=None,
):
    """Best configuration per profile, scored with the trained adapter on the validation split.
    `profiles` are search profiles (toolchain.whole_model.search_profiles / `run_search_profiles`).

    Each configuration is scored with the embedding tables its profile ships (`run.tables`), so profiles
    are searched in groups of one table format each; the scoring time (`settings.seconds`) is shared out
    over the groups by their number of profiles. The layer costs (`run_layer_costs`, computed once) serve
    every group. `scorer_for(table)` replaces the default `validation_scorer(run, table)` (benches wrap
    it to record what was scored)."""
    import dataclasses

    from tqdm.auto import tqdm

    from toolchain.search import SearchSettings, merge_results, select_configs

    scorer_for = scorer_for or (lambda table: validation_scorer(run, table))
    settings = settings or SearchSettings(
        seed=seed, seconds=SEARCH_SECONDS, accuracy_tie=accuracy_tie(run, len(run.splits.val.labels))
    )
    costs = costs or run_layer_costs(run, profiles)
    groups: dict[EmbeddingQuant | None, list[DeviceProfile]] = {}
    for p in profiles:
        groups.setdefault(p.embeddings, []).append(p)
    parts = []
    with tqdm(desc="search", unit="config", disable=not progress, dynamic_ncols=True) as bar:
        for group in groups.values():
            scorer = scorer_for(group[0].embeddings)

            def score(config: BitConfig, scorer=scorer):
                out = scorer(config)
                bar.update(1)
                return out

            share = None if settings.seconds is None else settings.seconds * len(group) / len(profiles)
            group_settings = dataclasses.replace(settings, seconds=share)
            parts.append(select_configs(group, run.specs, score, costs=costs, settings=group_settings))
    return merge_results(parts, [p.name for p in profiles])


def accuracy_tie(run, n_docs: int) -> float:
    """TIE_SE standard errors, in points, of an accuracy at the float model's on `n_docs` documents."""
    from toolchain.evaluate import metrics

    p = metrics(run.float_logits("val"), run.splits.val.labels).accuracy / 100.0
    return TIE_SE * 100.0 * math.sqrt(max(p * (1 - p), 1e-4) / max(n_docs, 1))


def run_layer_costs(run, profiles: Sequence[DeviceProfile], n_docs: int = FISHER_DOCS):
    """Every layer's estimated KL at every level of every variant `profiles` allow, from the float model's
    Fisher information on the first `n_docs` validation documents and the run's merged integers."""
    from toolchain.evaluate import encode
    from toolchain.search.fisher import fisher_costs, fisher_diagonal
    from toolchain.search.space import SearchSpace

    model = run.float_model()
    names = [s.name for s in run.specs]
    texts = run.splits.val.texts[:n_docs]
    batches = (encode(run.tokenizer, b, run.settings.max_length) for b in _length_batches(run.tokenizer, texts, 16))
    fisher, docs = fisher_diagonal(model, batches, names)
    weights = {n: model.get_submodule(n).weight.detach() for n in names}
    union = SearchSpace.union([SearchSpace.from_profile(p, run.specs) for p in profiles])
    return fisher_costs(fisher, docs, weights, union, run.generate)


def _length_batches(tokenizer, texts: Sequence[str], size: int) -> list[list[str]]:
    """`texts` in batches of `size` sorted by token count (little padding); the order is not kept."""
    order = _by_length(tokenizer, texts)
    return [[texts[i] for i in order[k : k + size]] for k in range(0, len(order), size)]


def _by_length(tokenizer, texts: Sequence[str]) -> list[int]:
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=False)["input_ids"]]
    return sorted(range(len(texts)), key=lambda i: (lengths[i], i))


def validation_scorer(run, table: EmbeddingQuant | None = None, n_docs: int | None = None, batch_size: int = 32):
    """Metrics of a configuration's merged integers on the validation split (its first `n_docs` documents;
    None: all), with the embedding tables in format `table` (an EmbeddingQuant; None: float). The documents
    are tokenised once, in batches of similar length."""
    from toolchain.evaluate import encode, metrics

    val = run.splits.val
    rows = range(len(val.texts) if n_docs is None else min(n_docs, len(val.texts)))
    texts = [val.texts[i] for i in rows]
    order = _by_length(run.tokenizer, texts)
    batches = [
        encode(run.tokenizer, [texts[i] for i in order[k : k + batch_size]], run.settings.max_length)
        for k in range(0, len(order), batch_size)
    ]
    labels = [val.labels[i] for i in order]
    reference = run.float_logits("val", list(rows))[order]

    @torch.no_grad()
    def score(config: BitConfig):
        model = run.quantized_model(config, table=table)
        logits = torch.cat([model(**b).logits.float() for b in batches])
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
