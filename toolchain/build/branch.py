"""The adapter-branch alternative of a build: for each profile that allows it, frozen integers plus an int8
low-rank branch instead of merged integers, the branch only when it scores strictly better on the search's
validation documents (accuracy; ties keep merged integers: no extra nodes at run time).

A merged-trained adapter cannot serve as a branch (its delta is tied to the rounding residual), so the
branch comes from its own run: the same float fine-tune (shared, not recomputed), the branch profiles' bits
and grids, `forward="branch"`, trained only on base configurations those profiles can afford beside a
branch, for half the merged run's steps (toolchain.build.branch_training). Per profile, each DyLoRA rank
(the trained rank, then halves) takes its bytes out of the budget; the base configuration for what is left
is the search's first proposals under the merged run's layer costs, and every candidate is scored as it ships:
int8 factors, learned scales.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from toolchain.bitconfig import BitConfig
from toolchain.build.branch_training import shrunk_profile
from toolchain.evaluate import Metrics
from toolchain.profiles import DeviceProfile
from toolchain.search.fisher import LayerCosts
from toolchain.search.select import SearchSettings, Selection, objective, select_configs
from toolchain.search.space import cost_of, is_reachable

MERGED, BRANCH = "merged integers (CoA-LoRA)", "int8 adapter branch (CoA-LoRA)"


def branch_ranks(trained_rank: int) -> list[int]:
    """The nested ranks tried: the trained rank, then halves down to 1 (8 -> 8, 4, 2, 1)."""
    out, r = [], trained_rank
    while r >= 1:
        out.append(r)
        r //= 2
    return out


@dataclass(frozen=True)
class VariantChoice:
    """What one profile ships: merged integers or the branch, and both candidates' validation scores."""

    profile: str
    merged_rank: int  # the merged run's adapter rank (what merged integers are generated at)
    merged: Selection
    branch: Selection | None  # its config carries branch_rank; None when no rank fits the budget
    ranks_tried: dict[int, dict | None]  # rank -> best score at it (None: no configuration fits beside it)

    @property
    def use_branch(self) -> bool:
        """Only when strictly more accurate on the validation documents: the branch costs a MatMul pair and
        an Add per layer at run time, and on ties KL decided by noise (bench/adapter_branch.py)."""
        return self.branch is not None and self.branch.metrics.accuracy > self.merged.metrics.accuracy

    @property
    def chosen(self) -> Selection:
        return self.branch if self.use_branch else self.merged

    def variant(self) -> dict:
        """The manifest's `variant`: how the weights were produced, and the comparison that chose them."""
        config = self.chosen.config
        return {
            "weights": BRANCH if self.use_branch else MERGED,
            "rank": config.branch_rank if self.use_branch else self.merged_rank,
            "branch_bits_per_weight": round(config.branch_bits, 4),
            "validation": {
                "merged": self.merged.metrics.to_dict(),
                "branch": None if self.branch is None else self.branch.metrics.to_dict(),
                "branch_rank": None if self.branch is None else self.branch.config.branch_rank,
                "ranks_tried": {str(r): m for r, m in self.ranks_tried.items()},
            },
        }


def choose_variant(
    profile: DeviceProfile,
    merged: Selection,
    merged_rank: int,
    specs,
    score_branch: Callable[[BitConfig], Metrics],
    costs: LayerCosts,
    ranks: Sequence[int],
    *,
    confirm: Callable[[BitConfig], Metrics] | None = None,
    seed: int = 0,
) -> VariantChoice:
    """Best branch candidate over `ranks` (each in its shrunk budget), against the merged selection.

    `score_branch` scores a configuration that carries `branch_rank` (as it ships); the ranks compete by KL
    to the float model (toolchain.search.select.objective; then the most bits). The best is scored again by
    `confirm` on the documents the merged selection was chosen on (None: `score_branch` reads those), and
    the branch must be strictly more accurate than merged integers there (`VariantChoice.use_branch`)."""
    best: Selection | None = None
    tried: dict[int, dict | None] = {}
    for rank in ranks:
        shrunk = shrunk_profile(profile, merged.config, rank)
        if shrunk is None or not is_reachable(shrunk, specs):
            tried[rank] = None
            continue

        def score(config: BitConfig, rank: int = rank) -> Metrics:
            return score_branch(config.model_copy(update={"branch_rank": rank}))

        found = select_configs([shrunk], specs, score, costs=costs, settings=seeds_only(seed)).selections[0]
        config = found.config.model_copy(update={"branch_rank": rank})
        candidate = Selection(profile.name, config, cost_of(config), found.metrics, found.candidates_evaluated)
        tried[rank] = candidate.metrics.to_dict()
        if best is None or _key(candidate) < _key(best):
            best = candidate
    if best is not None and confirm is not None:
        best = dataclasses.replace(best, metrics=confirm(best.config))
    return VariantChoice(profile.name, merged_rank, merged, best, tried)


def _key(s: Selection) -> tuple[float, float]:
    return objective(s.metrics), -round(s.config.avg_bits, 9)


def seeds_only(seed: int = 0) -> SearchSettings:
    """The search's first proposals and nothing else: per grid variant, the exact allocation under the
    layer costs and the highest uniform configuration that fits (2 scores)."""
    return SearchSettings(seed=seed, proposals=1, rounds=0, local=0)
