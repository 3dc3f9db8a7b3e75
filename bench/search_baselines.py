"""What a chosen configuration is compared against (issue acceptance): uniform and random configurations.

- `uniform_at_least`: the cheapest uniform configuration (one bit-width, scheme and granularity for every
  layer) of the profile that costs at least as much as the chosen one in every budget the profile caps,
  even if that is over the budget; ties in cost are all scored and the best is returned.
- `best_feasible_uniform`: the best uniform configuration within the profile's budget.
- `best_random`: the best of n random feasible configurations (random bits per layer in a random variant,
  then random layers lowered until within budget).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from toolchain.bitconfig import BitConfig
from toolchain.evaluate import Metrics
from toolchain.models import LayerSpec
from toolchain.profiles import DeviceProfile
from toolchain.search.allocate import CostTable, random_levels
from toolchain.search.scoring import quant_key, rank_key, selection_key
from toolchain.search.space import Cost, Limit, SearchSpace, cost_of

MetricsScorer = Callable[[BitConfig], Metrics]


@dataclass(frozen=True)
class Baseline:
    profile: str
    kind: str  # "uniform_at_least", "feasible_uniform" or "random"
    config: BitConfig
    cost: Cost
    metrics: Metrics
    evaluated: int  # configurations scored to find it

    def to_dict(self) -> dict:
        return {
            "profile": self.profile,
            "kind": self.kind,
            "cost": self.cost.to_dict(),
            "metrics": self.metrics.to_dict(),
            "evaluated": self.evaluated,
            "key": quant_key(self.config),
            "bits": self.config.bits_vector(),
        }


def _best(profile: DeviceProfile, kind: str, configs: list[BitConfig], score: MetricsScorer) -> Baseline | None:
    scored = [(c, score(c)) for c in configs]
    if not scored:
        return None
    config, m = min(scored, key=lambda s: selection_key(*s))
    return Baseline(profile.name, kind, config, cost_of(config), m, len(scored))


def _uniform(space: SearchSpace) -> list[BitConfig]:
    return [space.build(b, v) for v in space.variants() for b in space.levels(v)]


def _budget_key(profile: DeviceProfile, cost: Cost) -> tuple[float, ...]:
    """The costs the profile caps, in a fixed order."""
    b = profile.budget
    return tuple(
        x for x, cap in ((cost.avg_bits, b.max_avg_bits), (cost.container_bytes, b.max_weight_mb)) if cap is not None
    )


def uniform_at_least(
    profile: DeviceProfile, specs: Sequence[LayerSpec], score: MetricsScorer, at_least: Cost
) -> Baseline | None:
    """The cheapest uniform configuration costing at least `at_least` (each capped cost); best among ties.

    None only if `at_least` is dearer than every uniform configuration of the profile.
    """
    floor = _budget_key(profile, at_least)
    pool = [
        c
        for c in _uniform(SearchSpace.from_profile(profile, specs))
        if all(x >= f * (1 - 1e-12) for x, f in zip(_budget_key(profile, cost_of(c)), floor))
    ]
    if not pool:
        return None
    cheapest = min(_budget_key(profile, cost_of(c)) for c in pool)
    return _best(profile, "uniform_at_least", [c for c in pool if _budget_key(profile, cost_of(c)) == cheapest], score)


def best_feasible_uniform(profile: DeviceProfile, specs: Sequence[LayerSpec], score: MetricsScorer) -> Baseline | None:
    """The best uniform configuration within the profile's budget, or None if no uniform one fits."""
    space = SearchSpace.from_profile(profile, specs)
    limit = Limit.of_profile(profile, space.n_params)
    return _best(profile, "feasible_uniform", [c for c in _uniform(space) if limit.admits(c)], score)


def random_feasible(profile: DeviceProfile, specs: Sequence[LayerSpec], n: int, seed: int = 0) -> list[BitConfig]:
    """n distinct random configurations within the profile's budget (fewer if the space has fewer)."""
    space = SearchSpace.from_profile(profile, specs)
    limit = Limit.of_profile(profile, space.n_params)
    tables = [CostTable.build(space, v) for v in space.variants()]
    rng = random.Random(seed)
    out: dict[str, BitConfig] = {}
    for _ in range(50 * n):
        if len(out) >= n:
            break
        t = tables[rng.randrange(len(tables))]
        idx = random_levels(t, limit, rng)
        if idx is not None:
            config = space.build(t.bits(idx), t.variant)
            out.setdefault(quant_key(config), config)
    return list(out.values())


def best_random(
    profile: DeviceProfile, specs: Sequence[LayerSpec], score: MetricsScorer, n: int = 20, seed: int = 0
) -> Baseline | None:
    """The best of n random feasible configurations."""
    return _best(profile, "random", random_feasible(profile, specs, n, seed), score)


def beats(a: Metrics, b: Metrics) -> bool:
    """a ranks strictly before b: higher accuracy, or equal accuracy and lower KL (higher macro-F1)."""
    return rank_key(a) < rank_key(b)
