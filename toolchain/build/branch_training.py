"""The adapter-branch run's training side: how many steps it trains, which base configurations it trains
on (those a branch profile can afford beside its cheapest branch), and where it lives beside the merged
run. The choice between merged integers and a branch, after training, is toolchain.build.branch."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from toolchain.adapter.configs import FilteredConfigSource, RandomConfigSource, make_config
from toolchain.bitconfig import BitConfig, config_from_bits
from toolchain.profiles import Budget, DeviceProfile
from toolchain.search.space import BYTES_PER_MB, Limit, is_reachable

BRANCH_RUN_INFIX = "-branch-"  # <merged run>-branch-<settings digest>: the branch run's directory name


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
