"""Exact bit allocation: per-layer costs and a budget as a multiple-choice knapsack, solved as a MILP.

Each layer takes exactly one level (bit-width) of one variant; the total estimated loss is minimised
subject to the budget's caps on logical bits and container bytes. This is the allocation HAWQ-V3 solves
with an integer program: with 36 layers and 7 levels it is 252 binary variables, which HiGHS
(`scipy.optimize.milp`) solves exactly in milliseconds. The next-best allocations come from re-solving with
a cut that excludes each one found, so a search can spend real evaluations on the few configurations the
cost model ranks highest, not on one point estimate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from toolchain.search.allocate import CostTable
from toolchain.search.space import Limit


def knapsack(
    table: CostTable,
    costs: Sequence[Sequence[float]],
    limit: Limit,
    *,
    exclude: Sequence[Sequence[int]] = (),
    fixed: Mapping[int, int] | None = None,
) -> list[int] | None:
    """Level indices (one per layer of `table`) with the least total `costs[layer][level]` within `limit`,
    other than the allocations in `exclude` and with `fixed[layer]` levels kept; None when no allocation
    meets the limit."""
    n_layers, n_levels = len(table.logical), len(table.levels)
    if len(costs) != n_layers or any(len(row) != n_levels for row in costs):
        raise ValueError(f"costs: need {n_layers} rows of {n_levels} levels, got {[len(r) for r in costs]}")
    c = np.asarray(costs, dtype=float).ravel()
    rows, lower, upper = [], [], []
    for i in range(n_layers):  # exactly one level per layer
        one = np.zeros((n_layers, n_levels))
        one[i] = 1
        rows.append(one.ravel())
        lower.append(1)
        upper.append(1)
    for used, cap in ((table.logical, limit.max_logical_bits), (table.container, limit.max_container_bytes)):
        if cap is not None:
            rows.append(np.asarray(used, dtype=float).ravel())
            lower.append(-np.inf)
            upper.append(cap)
    for idx in exclude:  # no-good cut: at most n_layers - 1 of this allocation's choices
        cut = np.zeros((n_layers, n_levels))
        cut[np.arange(n_layers), list(idx)] = 1
        rows.append(cut.ravel())
        lower.append(-np.inf)
        upper.append(n_layers - 1)
    allowed = np.ones((n_layers, n_levels))
    for i, level in (fixed or {}).items():
        allowed[i] = 0
        allowed[i, level] = 1
    res = milp(
        c,
        constraints=LinearConstraint(np.array(rows), lower, upper),
        integrality=np.ones_like(c),
        bounds=Bounds(0, allowed.ravel()),
    )
    if res.x is None:
        return None
    idx = [int(k) for k in np.round(res.x).reshape(n_layers, n_levels).argmax(axis=1)]
    if limit.excess(*table.totals(idx)) > 0:  # HiGHS's feasibility tolerance let a rounded solution over
        raise RuntimeError(f"knapsack: the solver's allocation {idx} is over {limit}")
    return idx


def best_allocations(table: CostTable, costs: Sequence[Sequence[float]], limit: Limit, k: int) -> list[list[int]]:
    """Up to `k` distinct allocations in order of total cost: the optimum, then the next best each time."""
    found: list[list[int]] = []
    while len(found) < k:
        idx = knapsack(table, costs, limit, exclude=found)
        if idx is None:
            break
        found.append(idx)
    return found
