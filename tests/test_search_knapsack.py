"""The exact allocation: the MILP against brute force, the next-best order, cuts and fixed levels."""

from __future__ import annotations

import itertools
import random

import pytest

from toolchain.quant.core import Scheme
from toolchain.search.allocate import CostTable
from toolchain.search.knapsack import best_allocations, knapsack
from toolchain.search.space import Limit, Variant

VARIANT = Variant(Scheme.SYMMETRIC, None)


def _instance(seed: int, layers: int = 5, levels: tuple[int, ...] = (2, 3, 4, 8)):
    """Random per-layer sizes and costs falling with bits; containers round 3 bits up to 4."""
    rng = random.Random(seed)
    sizes = [rng.choice([64, 128, 256]) for _ in range(layers)]
    logical = tuple(tuple(n * b + 32 for b in levels) for n in sizes)
    container = tuple(tuple(n * (4 if b == 3 else b) // 8 + 4 for b in levels) for n in sizes)
    costs = [[rng.lognormvariate(0, 1) * 4.0**-b for b in levels] for _ in sizes]
    return CostTable(VARIANT, levels, logical, container), costs


def _brute(table: CostTable, costs, limit: Limit) -> list[tuple[float, list[int]]]:
    out = []
    for idx in itertools.product(range(len(table.levels)), repeat=len(table.logical)):
        if limit.excess(*table.totals(idx)) == 0:
            out.append((sum(costs[i][k] for i, k in enumerate(idx)), list(idx)))
    return sorted(out)


@pytest.mark.parametrize("seed", range(6))
def test_knapsack_is_the_brute_force_optimum_under_both_caps(seed):
    table, costs = _instance(seed)
    full = table.totals([len(table.levels) - 1] * len(table.logical))
    limit = Limit(max_logical_bits=0.55 * full[0], max_container_bytes=0.6 * full[1])
    ranked = _brute(table, costs, limit)
    assert ranked, "the instance must be feasible"
    idx = knapsack(table, costs, limit)
    assert limit.excess(*table.totals(idx)) == 0
    assert sum(costs[i][k] for i, k in enumerate(idx)) == pytest.approx(ranked[0][0], rel=1e-9)


def test_next_best_allocations_come_in_cost_order_and_are_distinct():
    table, costs = _instance(7)
    full = table.totals([len(table.levels) - 1] * len(table.logical))
    limit = Limit(max_logical_bits=0.5 * full[0])
    ranked = _brute(table, costs, limit)
    found = best_allocations(table, costs, limit, 5)
    assert len({tuple(f) for f in found}) == 5
    totals = [sum(costs[i][k] for i, k in enumerate(f)) for f in found]
    assert totals == pytest.approx([c for c, _ in ranked[:5]], rel=1e-9)


def test_fixed_levels_are_kept_and_an_impossible_budget_is_none():
    table, costs = _instance(3)
    cheapest = table.totals([0] * len(table.logical))
    limit = Limit(max_logical_bits=cheapest[0] + 300)
    idx = knapsack(table, costs, limit, fixed={0: 1})
    assert idx[0] == 1 and limit.excess(*table.totals(idx)) == 0
    assert knapsack(table, costs, Limit(max_logical_bits=cheapest[0] - 1)) is None
    assert knapsack(table, costs, limit, fixed={0: 3, 1: 3, 2: 3}) is None  # three layers at 8 bits do not fit
    with pytest.raises(ValueError, match="costs: need 5 rows of 4 levels"):
        knapsack(table, costs[:-1], limit)
