"""Two-objective Pareto helpers (both objectives minimised: cost in bits, loss): fronts, hypervolume, bins.

Pure functions on (cost, loss) pairs. The hypervolume is the exact 2-D sweep (a dozen lines), checked in the
tests against optuna's general-dimension routine, which optuna keeps private (`optuna._hypervolume`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[float, float]


def pareto_indices(points: Sequence[Point]) -> list[int]:
    """Indices of the non-dominated points, ordered by cost then loss (equal points all kept)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1], i))
    front: list[int] = []
    best_loss = math.inf
    for i in order:
        cost, loss = points[i]
        if loss < best_loss:
            front.append(i)
            best_loss = loss
        elif front and points[front[-1]] == (cost, loss):
            front.append(i)  # an exact duplicate of a front point is not dominated by it
    return front


def nondominated_ranks(points: Sequence[Point]) -> list[int]:
    """Front number of every point (0: Pareto front, 1: front once the first is removed, ...)."""
    ranks = [-1] * len(points)
    left = list(range(len(points)))
    rank = 0
    while left:
        front = {left[j] for j in pareto_indices([points[i] for i in left])}
        for i in front:
            ranks[i] = rank
        left = [i for i in left if i not in front]
        rank += 1
    return ranks


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """Area dominated by `points` and bounded by `reference` (points outside the box add nothing)."""
    inside = [p for p in points if p[0] < reference[0] and p[1] < reference[1]]
    area, prev_loss = 0.0, reference[1]
    for i in pareto_indices(inside):
        cost, loss = inside[i]
        if loss < prev_loss:
            area += (reference[0] - cost) * (prev_loss - loss)
            prev_loss = loss
    return area


def bin_edges(lo: float, hi: float, n: int) -> list[float]:
    """n equal-width bins over [lo, hi] as n + 1 edges."""
    if n < 1 or not hi >= lo:
        raise ValueError(f"need n >= 1 bins over lo <= hi, got n={n}, [{lo}, {hi}]")
    return [lo + (hi - lo) * k / n for k in range(n + 1)]


def bin_of(cost: float, edges: Sequence[float]) -> int:
    """Index of the bin holding `cost`; costs outside the edges go to the first or last bin."""
    for k in range(1, len(edges) - 1):
        if cost < edges[k]:
            return k - 1
    return len(edges) - 2


def contributions(points: Sequence[Point], reference: Point) -> list[float]:
    """Hypervolume only each point adds (0 for dominated points, duplicates and points outside the box)."""
    out = [0.0] * len(points)
    front = [i for i in pareto_indices(points) if points[i][0] < reference[0] and points[i][1] < reference[1]]
    for k, i in enumerate(front):
        cost, loss = points[i]
        next_cost = points[front[k + 1]][0] if k + 1 < len(front) else reference[0]
        prev_loss = points[front[k - 1]][1] if k > 0 else reference[1]
        out[i] = max(next_cost - cost, 0.0) * max(prev_loss - loss, 0.0)
    return out


def keep_per_bin(points: Sequence[Point], edges: Sequence[float], per_bin: int, reference: Point) -> list[int]:
    """Up to `per_bin` indices per budget bin: the bin's own front first, then later ranks while room lasts.

    Every bin keeps its own front, so the kept set covers all budgets even where a cheaper bin's points
    dominate a whole dearer bin. Within a rank, points adding more to the overall hypervolume go first, so
    a full bin drops what the overall front misses least.
    """
    share = contributions(points, reference)
    kept: list[int] = []
    for b in range(len(edges) - 1):
        members = [i for i, p in enumerate(points) if bin_of(p[0], edges) == b]
        ranks = nondominated_ranks([points[i] for i in members])
        order = sorted(range(len(members)), key=lambda j: (ranks[j], -share[members[j]], points[members[j]], j))
        kept += sorted((members[j] for j in order[:per_bin]), key=lambda i: (points[i], i))
    return kept
