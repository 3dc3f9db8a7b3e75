"""The adapter-branch alternative of a build: for each profile that allows it, frozen integers plus an int8
low-rank branch instead of merged integers, the branch only when it scores strictly better on the search's
validation documents (accuracy; ties keep merged integers: no extra nodes at run time).

A merged-trained adapter cannot serve as a branch (its delta is tied to the rounding residual), so the
branch comes from its own run: the same float fine-tune (shared, not recomputed), the branch profiles' bits
and grids, `forward="branch"`, trained only on base configurations those profiles can afford beside a
branch (`branch_training_filter`), for half the merged run's steps (`branch_steps`). Per profile, each
DyLoRA rank (the trained rank, then halves) takes its bytes out of the budget; the base configuration for
what is left is seeded by the same sensitivity-guided search (seeds only), and every candidate is scored as
it ships: int8 factors, learned scales.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolchain.adapter.configs import FilteredConfigSource, RandomConfigSource, make_config
from toolchain.bitconfig import BitConfig, config_from_bits
from toolchain.evaluate import Metrics
from toolchain.profiles import Budget, DeviceProfile
from toolchain.search import (
    Limit,
    SearchSettings,
    Selection,
    Sensitivity,
    cost_of,
    select_configs,
    selection_key,
)
from toolchain.search.space import BYTES_PER_MB, is_reachable

MERGED, BRANCH = "merged integers (CoA-LoRA)", "int8 adapter branch (CoA-LoRA)"
BRANCH_RUN_INFIX = "-branch-"  # <merged run>-branch-<settings digest>: the branch run's directory name


def branch_ranks(trained_rank: int) -> list[int]:
    """The nested ranks tried: the trained rank, then halves down to 1 (8 -> 8, 4, 2, 1)."""
    out, r = [], trained_rank
    while r >= 1:
        out.append(r)
        r //= 2
    return out


def shrunk_profile(profile: DeviceProfile, base: BitConfig, rank: int) -> DeviceProfile | None:
    """`profile` with a rank-`rank` branch's bits and bytes taken out of its budget (None: nothing left)."""
    with_branch = base.model_copy(update={"branch_rank": rank})
    bits, mb = with_branch.branch_bits, (with_branch.container_bytes - base.container_bytes) / BYTES_PER_MB
    b = profile.budget
    avg = None if b.max_avg_bits is None else b.max_avg_bits - bits
    cap = None if b.max_weight_mb is None else b.max_weight_mb - mb
    if (avg is not None and avg <= 0) or (cap is not None and cap <= 0):
        return None
    return profile.model_copy(update={"budget": Budget(max_avg_bits=avg, max_weight_mb=cap)})


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
    sensitivity: Sensitivity,
    ranks: Sequence[int],
    *,
    seed: int = 0,
) -> VariantChoice:
    """Best branch candidate over `ranks` (each in its shrunk budget), against the merged selection.

    `score_branch` scores a configuration that carries `branch_rank` (as it ships) on the same documents
    the merged selection was scored on; the ranks compete by `selection_key`, and the branch must then be
    strictly more accurate than merged integers (`VariantChoice.use_branch`)."""
    best: Selection | None = None
    tried: dict[int, dict | None] = {}
    for rank in ranks:
        shrunk = shrunk_profile(profile, merged.config, rank)
        if shrunk is None or not is_reachable(shrunk, specs):
            tried[rank] = None
            continue

        def score(config: BitConfig, rank: int = rank) -> Metrics:
            return score_branch(config.model_copy(update={"branch_rank": rank}))

        found = select_configs([shrunk], specs, score, sensitivity=sensitivity, settings=seeds_only(seed)).selections[0]
        config = found.config.model_copy(update={"branch_rank": rank})
        candidate = Selection(profile.name, config, cost_of(config), found.metrics, found.candidates_evaluated)
        tried[rank] = candidate.metrics.to_dict()
        if best is None or selection_key(config, candidate.metrics) < selection_key(best.config, best.metrics):
            best = candidate
    return VariantChoice(profile.name, merged_rank, merged, best, tried)


def seeds_only(seed: int = 0) -> SearchSettings:
    """The search's seeds at the budget and nothing else: 3 scores per grid variant."""
    return SearchSettings(seed=seed, front_evals=0, local_evals=0, lower_seeds=0)


def branch_steps(merged_steps: int) -> int:
    """The branch run's steps: half the merged run's. Trained only on what the branch profiles can afford
    (`branch_training_source`), 100 steps reached an 8-28 % lower KL to the float model than 200 steps spread
    over 2-4 bits, on every 2-bit configuration measured; 100 spread steps were 10-94 % above it
    (bench/adapter_branch_training.py, MiniLM / BBC News). The other 100 steps would cost about 90 s."""
    return (merged_steps + 1) // 2


def branch_training_filter(profiles: Sequence[DeviceProfile], specs) -> Callable[[BitConfig], bool] | None:
    """admits(config): whether some profile that allows a branch could ship `config` as the base beside
    its cheapest branch (rank 1; `shrunk_profile`). The branch run trains on these configurations only:
    a spread over 2-4 bits would spend most steps where a 2.5-bit budget never ships a branch. None when
    no profile can afford even a rank-1 branch: then no branch run is trained."""
    budgets = []
    for p in profiles:
        if not p.adapter_branch:
            continue
        shrunk = shrunk_profile(p, config_from_bits(specs, min(p.weights.bits)), rank=1)
        if shrunk is not None and is_reachable(shrunk, specs):
            budgets.append(shrunk)
    if not budgets:
        return None

    def admits(config: BitConfig) -> bool:
        return any(Limit.of_profile(b, config.n_params).admits(config) for b in budgets)

    return admits


def branch_training_source(profiles: Sequence[DeviceProfile], specs, bits, grids) -> FilteredConfigSource | None:
    """The branch run's configurations: the spread over `bits` and `grids`, filtered by
    `branch_training_filter`, falling back to the cheapest admitted uniform configuration when the filter
    admits almost nothing; None when no profile can afford a branch."""
    admits = branch_training_filter(profiles, specs)
    if admits is None:
        return None
    uniform = [make_config(specs, [min(bits)] * len(specs), [g] * len(specs)) for g in grids]
    fallback = next((c for c in sorted(uniform, key=lambda c: c.avg_bits) if admits(c)), None)
    return FilteredConfigSource(RandomConfigSource(specs, bits, grids), admits, fallback)


def branch_run_dir(merged_run_dir: Path, settings_digest: str, profiles: Sequence[DeviceProfile]) -> Path:
    """The branch run beside the merged one (whose key covers the model, data, settings and code), keyed by its
    own settings and by the budgets of the `profiles` that allow a branch (they filter what it trains on)."""
    budgets = sorted(p.budget.model_dump_json() for p in profiles if p.adapter_branch)
    key = hashlib.sha256(json.dumps([settings_digest, budgets]).encode()).hexdigest()[:16]
    return merged_run_dir.with_name(f"{merged_run_dir.name}{BRANCH_RUN_INFIX}{key}")
