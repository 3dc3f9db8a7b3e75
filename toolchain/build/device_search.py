"""The build's search: each device profile's configuration, scored with the trained run's merged
integers against the float model on the validation split, and the search's output files.

- Per-layer costs: the float model's Fisher information on FISHER_DOCS validation documents
  (toolchain.search.fisher) and the run's merged integers at every level.
- Screening: every candidate's KL and accuracy on the first SCREEN_DOCS validation documents (classes
  interleaved), within SEARCH_SECONDS for all profiles.
- Confirmation: each profile's finalists on the whole validation split, where the choice is made (accuracy
  ties within TIE_SE standard errors).
The documents are tokenised once, in batches of similar length, with the float model's logits beside them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from toolchain.bitconfig import BitConfig
from toolchain.io import atomic_write_json
from toolchain.profiles import DeviceProfile, EmbeddingQuant

FISHER_DOCS = 64  # validation documents the Fisher information is computed on
SCREEN_DOCS = 256  # validation documents each candidate is screened on
SEARCH_SECONDS = 30.0  # screening time of one build's search, shared out over the table-format groups
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
    """Best configuration per profile, screened with the trained adapter on part of the validation split and
    chosen on all of it. `profiles` are search profiles (toolchain.whole_model.search_profiles /
    `run_search_profiles`).

    Each configuration is scored with the embedding tables its profile ships (`run.tables`), so profiles
    are searched in groups of one table format each; the screening time (`settings.seconds`) is shared out
    over the groups by their number of profiles. The layer costs (`run_layer_costs`, computed once) serve
    every group. `scorer_for(table)` returns the (screen, confirm) scorers of a table format (benches wrap
    them to record what was scored; confirm None: choose on the screen scores)."""
    import dataclasses

    from tqdm.auto import tqdm

    from toolchain.search import SearchSettings, merge_results, select_configs

    full = None
    if scorer_for is None:
        screen, full = SplitDocs.of(run, SCREEN_DOCS), SplitDocs.of(run)

        def scorer_for(table):
            return screen.scorer(run, table), full.scorer(run, table)

    if settings is None:
        tie = accuracy_tie(full or SplitDocs.of(run))
        settings = SearchSettings(seed=seed, seconds=SEARCH_SECONDS, accuracy_tie=tie)
    costs = costs or run_layer_costs(run, profiles)
    groups: dict[EmbeddingQuant | None, list[DeviceProfile]] = {}
    for p in profiles:
        groups.setdefault(p.embeddings, []).append(p)
    parts = []
    with tqdm(desc="search", unit="config", disable=not progress, dynamic_ncols=True) as bar:
        for group in groups.values():
            screen_score, confirm_score = scorer_for(group[0].embeddings)

            def counted(scorer):
                def score(config: BitConfig):
                    out = scorer(config)
                    bar.update(1)
                    return out

                return None if scorer is None else score

            share = None if settings.seconds is None else settings.seconds * len(group) / len(profiles)
            part = select_configs(
                group,
                run.specs,
                counted(screen_score),
                costs=costs,
                confirm=counted(confirm_score),
                settings=dataclasses.replace(settings, seconds=share),
            )
            parts.append(part)
    return merge_results(parts, [p.name for p in profiles])


def accuracy_tie(docs: SplitDocs) -> float:
    """TIE_SE standard errors, in points, of an accuracy at the float model's on `docs`."""
    from toolchain.evaluate import metrics

    p = metrics(docs.reference, list(docs.labels)).accuracy / 100.0
    return TIE_SE * 100.0 * math.sqrt(max(p * (1 - p), 1e-4) / max(len(docs.labels), 1))


def run_layer_costs(run, profiles: Sequence[DeviceProfile], n_docs: int = FISHER_DOCS):
    """Every layer's estimated KL at every level of every variant `profiles` allow, from the float model's
    Fisher information on the first `n_docs` validation documents and the run's merged integers."""
    from toolchain.search.fisher import fisher_costs, fisher_diagonal
    from toolchain.search.space import SearchSpace

    model = run.float_model()
    names = [s.name for s in run.specs]
    docs = SplitDocs.of(run, n_docs, batch_size=16, reference=False)
    fisher, n = fisher_diagonal(model, docs.batches, names)
    weights = {name: model.get_submodule(name).weight.detach() for name in names}
    union = SearchSpace.union([SearchSpace.from_profile(p, run.specs) for p in profiles])
    return fisher_costs(fisher, n, weights, union, run.generate)


@dataclass(frozen=True)
class SplitDocs:
    """The documents of one split tokenised once, in batches of similar length, with their labels and the
    float model's logits in the same order."""

    batches: tuple[dict[str, torch.Tensor], ...]
    labels: tuple[int, ...]
    reference: torch.Tensor | None

    @classmethod
    @torch.no_grad()
    def of(
        cls, run, n_docs: int | None = None, batch_size: int = 32, reference: bool = True, split: str = "val"
    ) -> SplitDocs:
        """The first `n_docs` documents of the run's `split` ('val' or 'test'; n_docs None: all of them)."""
        from toolchain.errors import BadInputError
        from toolchain.evaluate import encode

        if split not in ("val", "test"):
            raise BadInputError(f"split: {split!r} is not one of val, test")
        ds = run.splits.val if split == "val" else run.splits.test
        n = len(ds.texts) if n_docs is None else min(n_docs, len(ds.texts))
        texts = ds.texts[:n]
        lengths = [len(ids) for ids in run.tokenizer(list(texts), truncation=False)["input_ids"]]
        order = sorted(range(n), key=lambda i: (lengths[i], i))
        batches = tuple(
            encode(run.tokenizer, [texts[i] for i in order[k : k + batch_size]], run.settings.max_length)
            for k in range(0, n, batch_size)
        )
        ref = None
        if reference:
            model = run.float_model().eval()
            ref = torch.cat([model(**b).logits.float() for b in batches])
        return cls(batches, tuple(ds.labels[i] for i in order), ref)

    @torch.no_grad()
    def logits(self, run, config: BitConfig, table: EmbeddingQuant | None = None) -> torch.Tensor:
        """(N, C) logits of `config`'s merged integers on these documents, in their order, with the embedding
        tables in format `table` (an EmbeddingQuant; None: float)."""
        model = run.quantized_model(config, table=table)
        return torch.cat([model(**b).logits.float() for b in self.batches])

    def scorer(self, run, table: EmbeddingQuant | None = None):
        """Metrics of a configuration's merged integers on these documents against the float model."""
        from toolchain.evaluate import metrics

        def score(config: BitConfig):
            return metrics(self.logits(run, config, table), list(self.labels), self.reference)

        return score


def validation_scorer(run, table: EmbeddingQuant | None = None, n_docs: int | None = None):
    """Metrics of a configuration's merged integers on the first `n_docs` validation documents (None: all),
    with the embedding tables in format `table`: what the build's search confirms its choice with."""
    return SplitDocs.of(run, n_docs).scorer(run, table)


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
