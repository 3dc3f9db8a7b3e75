"""The build's search: each device profile's configuration, scored with the trained run's merged
integers against the float model on the validation split, and the search's output files.

- Per-layer costs: the float model's Fisher information on the first FISHER_TOKENS tokens of validation
  documents (toolchain.search.fisher) and the run's merged integers at every level.
- Screening: every candidate's KL and accuracy on the first SCREEN_TOKENS tokens of validation documents
  (classes interleaved): BUILD_SEARCH's proposals and one corrected round, a fixed number of scores so that
  the same run gives the same packages on any machine (a time budget made the pick depend on the load).
- Confirmation: each profile's finalists on the validation split up to CONFIRM_TOKENS tokens (all of MR's
  1,057 sentences, 28k tokens), where the choice is made (accuracy ties within TIE_SE standard errors).
Budgets in tokens keep the search's time the same on short sentences and on long documents. The documents
are tokenised once, in batches of similar length, with the float model's logits beside them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from toolchain.bitconfig import BitConfig
from toolchain.io import atomic_write_json
from toolchain.profiles import ActivationQuant, DeviceProfile, EmbeddingQuant

FISHER_TOKENS = 2_048  # of validation documents the Fisher information is computed on
SCREEN_TOKENS = 8_192  # of validation documents each candidate is screened on
CONFIRM_TOKENS = 32_768  # of validation documents the finalists are scored and chosen on
# the build's evaluation budget: about 20 screens and 9 confirmations on MiniLM's five profiles (~2 min)
BUILD_SEARCH = dict(proposals=2, rounds=1, local=0, seconds=None)
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
    docs: tuple[SplitDocs, SplitDocs] | None = None,
):
    """Best configuration per profile, screened with the trained adapter on part of the validation split and
    chosen on all of it. `profiles` are search profiles (toolchain.whole_model.search_profiles /
    `run_search_profiles`).

    Each configuration is scored with the embedding tables its profile ships (`run.tables`), so profiles
    are searched in groups of one table format each; the screening time (`settings.seconds`) is shared out
    over the groups by their number of profiles. The layer costs (`run_layer_costs`, computed once) serve
    every group. `docs` are the (screen, confirm) documents (`search_docs`; built here when None).
    `scorer_for(profile)` replaces the scorers of the arithmetic `profile`'s device computes (`arithmetic`;
    benches; confirm None: choose on the screen scores)."""
    import dataclasses

    from tqdm.auto import tqdm

    from toolchain.search import SearchSettings, merge_results, select_configs

    full = None
    if scorer_for is None:
        screen, full = docs or search_docs(run)

        def scorer_for(profile):
            scored = arithmetic(profile)
            return screen.scorer(run, *scored), full.scorer(run, *scored)

    if settings is None:
        tie = accuracy_tie(full or SplitDocs.of(run, max_tokens=CONFIRM_TOKENS))
        settings = SearchSettings(seed=seed, accuracy_tie=tie, **BUILD_SEARCH)
    costs = costs or run_layer_costs(run, profiles)
    groups: dict[tuple[EmbeddingQuant | None, ActivationQuant], list[DeviceProfile]] = {}
    for p in profiles:
        groups.setdefault(arithmetic(p), []).append(p)
    parts = []
    with tqdm(desc="search", unit="config", disable=not progress, dynamic_ncols=True) as bar:
        for group in groups.values():
            screen_score, confirm_score = scorer_for(group[0])

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


def arithmetic(profile: DeviceProfile) -> tuple[EmbeddingQuant | None, ActivationQuant]:
    """What the scorer reproduces of a profile's device: its embedding table format and how each searched
    layer's input is quantized (`SplitDocs.logits`; the int8 head is not modelled, docs/compute-paths.md)."""
    return profile.embeddings, profile.activations


def search_docs(run) -> tuple[SplitDocs, SplitDocs]:
    """The search's screening (SCREEN_TOKENS) and confirmation (CONFIRM_TOKENS) validation documents; the
    reference is the run's float model, which an adapter-branch run beside it shares."""
    return SplitDocs.of(run, max_tokens=SCREEN_TOKENS), SplitDocs.of(run, max_tokens=CONFIRM_TOKENS)


def accuracy_tie(docs: SplitDocs) -> float:
    """TIE_SE standard errors, in points, of an accuracy at the float model's on `docs`."""
    from toolchain.evaluate import metrics

    p = metrics(docs.reference, list(docs.labels)).accuracy / 100.0
    return TIE_SE * 100.0 * math.sqrt(max(p * (1 - p), 1e-4) / max(len(docs.labels), 1))


def run_layer_costs(run, profiles: Sequence[DeviceProfile], max_tokens: int = FISHER_TOKENS):
    """Every layer's estimated KL at every level of every variant `profiles` allow, from the float model's
    Fisher information on the first validation documents up to `max_tokens` tokens and the run's merged
    integers."""
    from toolchain.search.fisher import fisher_costs, fisher_diagonal
    from toolchain.search.space import SearchSpace

    model = run.float_model()
    names = [s.name for s in run.specs]
    docs = SplitDocs.of(run, max_tokens=max_tokens, batch_size=16, reference=False)
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
        cls,
        run,
        n_docs: int | None = None,
        *,
        max_tokens: int | None = None,
        batch_size: int = 32,
        reference: bool = True,
        split: str = "val",
    ) -> SplitDocs:
        """The first documents of the run's `split` ('val' or 'test'): `n_docs` of them, and no more than fit
        in `max_tokens` tokens as the model reads them (truncated to max_length; at least one document).
        Both None: the whole split."""
        from toolchain.data.dataset import tokenizer_args
        from toolchain.errors import BadInputError
        from toolchain.evaluate import encode

        if split not in ("val", "test"):
            raise BadInputError(f"split: {split!r} is not one of val, test")
        ds = run.splits.val if split == "val" else run.splits.test
        n = len(ds) if n_docs is None else min(n_docs, len(ds))
        first, second = tokenizer_args(ds.inputs[:n])
        read = run.tokenizer(first, second, truncation=True, max_length=run.settings.max_length)
        lengths = [len(ids) for ids in read["input_ids"]]
        if max_tokens is not None:
            n = max(1, sum(1 for total in itertools.accumulate(lengths) if total <= max_tokens))
        texts = ds.inputs[:n]
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
    def logits(
        self,
        run,
        config: BitConfig,
        table: EmbeddingQuant | None = None,
        activations: ActivationQuant = ActivationQuant.NONE,
    ) -> torch.Tensor:
        """(N, C) logits of `config`'s merged integers on these documents, in their order, with the embedding
        tables in format `table` (an EmbeddingQuant; None: float) and every quantized layer's input as
        `activations` computes it: float; rounded to int8 per call (dynamic); or rounded to one uint8 range
        per layer calibrated, for this configuration, on the training texts the export calibrates on
        (static)."""
        from toolchain.exporters import twin

        model = run.quantized_model(config, table=table)
        if activations is ActivationQuant.INT8_DYNAMIC:
            twin.quantize_inputs_dynamically(model)
        elif activations is ActivationQuant.INT8_STATIC:
            twin.quantize_inputs_statically(model, twin.calibrated_qparams(model, calibration_batches(run)))
        return torch.cat([model(**b).logits.float() for b in self.batches])

    def scorer(self, run, table: EmbeddingQuant | None = None, activations: ActivationQuant = ActivationQuant.NONE):
        """Metrics of a configuration's merged integers on these documents against the float model."""
        from toolchain.evaluate import metrics

        def score(config: BitConfig):
            return metrics(self.logits(run, config, table, activations), list(self.labels), self.reference)

        return score


def calibration_batches(run) -> tuple[dict[str, torch.Tensor], ...]:
    """The export's calibration texts (toolchain.build.device.calibration_texts) as one batch padded to the
    longest of them, as the export's calibration runs are."""
    from toolchain.build.device import CALIBRATION_TEXTS, calibration_texts
    from toolchain.evaluate import encode

    texts = calibration_texts(run.splits.train, CALIBRATION_TEXTS)
    return (encode(run.tokenizer, texts, run.settings.max_length),)


def validation_scorer(run, table: EmbeddingQuant | None = None):
    """Metrics of a configuration's merged integers on the validation documents the build's search confirms
    its choice on (CONFIRM_TOKENS), with the embedding tables in format `table`."""
    return SplitDocs.of(run, max_tokens=CONFIRM_TOKENS).scorer(run, table)


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
