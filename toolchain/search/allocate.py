"""Per-layer bit allocation under a budget: sensitivity-greedy (seeds, local moves) and random (baselines).

Works on integer level indices over a precomputed cost table, so one allocation of 36 layers takes
microseconds and never builds intermediate BitConfigs.

The loss model behind the greedy choice: a layer measured to raise the loss by s at `ref_bits` raises it
by about s * 4^(ref_bits - b) at b bits, since rounding noise power falls 4x per extra bit.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from toolchain.bitconfig import LayerBits
from toolchain.search.space import Limit, SearchSpace, Variant


@dataclass(frozen=True)
class CostTable:
    """Logical bits and container bytes of each layer at each level (ascending bit-widths) of one variant."""

    variant: Variant
    levels: tuple[int, ...]
    logical: tuple[tuple[int, ...], ...]  # [layer][level]
    container: tuple[tuple[int, ...], ...]  # [layer][level]

    @classmethod
    def build(cls, space: SearchSpace, variant: Variant) -> CostTable:
        levels = space.levels(variant)
        rows = [[_layer_bits(space, variant, spec, b) for b in levels] for spec in space.specs]
        return cls(
            variant,
            levels,
            tuple(tuple(lb.logical_bits for lb in row) for row in rows),
            tuple(tuple(lb.container_bytes for lb in row) for row in rows),
        )

    def totals(self, idx: Sequence[int]) -> tuple[int, int]:
        logical = sum(row[i] for row, i in zip(self.logical, idx))
        container = sum(row[i] for row, i in zip(self.container, idx))
        return logical, container

    def bits(self, idx: Sequence[int]) -> list[int]:
        return [self.levels[i] for i in idx]

    def index(self, bits: Sequence[int]) -> list[int]:
        return [self.levels.index(b) for b in bits]


def _layer_bits(space: SearchSpace, variant: Variant, spec, bits: int) -> LayerBits:
    return LayerBits(
        bits=bits,
        scheme=variant.scheme,
        block_size=variant.block_size,
        container=space.container_for(bits, variant.scheme),
        out_features=spec.out_features,
        in_features=spec.in_features,
    )


def penalty(sens: float, bits: int, ref_bits: int) -> float:
    """Estimated loss increase of one layer at `bits`, given its measured increase `sens` at `ref_bits`."""
    return max(sens, 0.0) * 4.0 ** (ref_bits - bits)


def _weights(limit: Limit) -> tuple[float, float]:
    """Cost weights turning (logical bits, container bytes) into budget fractions."""
    wl = 0.0 if limit.max_logical_bits is None else 1.0 / limit.max_logical_bits
    wc = 0.0 if limit.max_container_bytes is None else 1.0 / limit.max_container_bytes
    return wl, wc


def _step_cost(t: CostTable, i: int, lo: int, hi: int, w: tuple[float, float]) -> float:
    """Budget fraction saved by moving layer i from level hi down to lo."""
    return w[0] * (t.logical[i][hi] - t.logical[i][lo]) + w[1] * (t.container[i][hi] - t.container[i][lo])


def allocate(
    t: CostTable,
    sens: Sequence[float],
    limit: Limit,
    ref_bits: int,
    start: Sequence[int] | None = None,
    keep: frozenset[int] = frozenset(),
) -> list[int] | None:
    """Level indices meeting `limit` with a low estimated loss, or None if even the lowest levels do not.

    From `start` (default: every layer at its highest level), lower the layer whose estimated loss rises
    least per budget fraction saved until within budget (never lowering layers in `keep`), then spend what
    is left by raising the layer with the best estimated gain per fraction spent.
    """
    idx = list(start) if start is not None else [len(t.levels) - 1] * len(t.logical)
    w = _weights(limit)
    used = list(t.totals(idx))
    while limit.excess(*used) > 0:
        moves = [
            (_ratio(sens[i], t, i, lo, idx[i], ref_bits, w), i, lo)
            for i in range(len(idx))
            if i not in keep and (lo := _down(t, i, idx[i], w)) is not None
        ]
        if not moves:
            return None
        _, i, lo = min(moves)
        _move(t, idx, used, i, lo)
    return _fill(t, sens, limit, ref_bits, idx, used, w)


def _down(t: CostTable, i: int, level: int, w: tuple[float, float]) -> int | None:
    """The highest level below `level` that saves budget (a 3-bit layer in an int4 container saves no
    container bytes over 4 bits, but 2 bits in int2 does), or None."""
    for lo in range(level - 1, -1, -1):
        if _step_cost(t, i, lo, level, w) > 0:
            return lo
    return None


def _move(t: CostTable, idx: list[int], used: list[int], i: int, level: int) -> None:
    """Set layer i to `level`, keeping the running totals `used` in step."""
    used[0] += t.logical[i][level] - t.logical[i][idx[i]]
    used[1] += t.container[i][level] - t.container[i][idx[i]]
    idx[i] = level


def _ratio(s: float, t: CostTable, i: int, lo: int, hi: int, ref_bits: int, w) -> float:
    """Estimated loss change per budget fraction between levels lo < hi of layer i."""
    gain = penalty(s, t.levels[lo], ref_bits) - penalty(s, t.levels[hi], ref_bits)
    return gain / _step_cost(t, i, lo, hi, w)


def _fill(t: CostTable, sens, limit: Limit, ref_bits: int, idx: list[int], used: list[int], w) -> list[int]:
    """Raise layers one level at a time, best estimated gain per cost first, while the budget holds."""
    while True:
        best: tuple[float, int] | None = None
        for i in range(len(idx)):
            lvl = idx[i]
            if lvl + 1 >= len(t.levels) or penalty(sens[i], t.levels[lvl], ref_bits) <= 0:
                continue
            after = (
                used[0] + t.logical[i][lvl + 1] - t.logical[i][lvl],
                used[1] + t.container[i][lvl + 1] - t.container[i][lvl],
            )
            if limit.excess(*after) > 0:
                continue
            cost = _step_cost(t, i, lvl, lvl + 1, w)
            score = float("inf") if cost <= 0 else _ratio(sens[i], t, i, lvl, lvl + 1, ref_bits, w)
            if best is None or score > best[0]:
                best = (score, i)
        if best is None:
            return idx
        _move(t, idx, used, best[1], idx[best[1]] + 1)


def random_levels(t: CostTable, limit: Limit, rng: random.Random) -> list[int] | None:
    """Uniformly random levels, then random layers lowered one level at a time until within `limit`."""
    idx = [rng.randrange(len(t.levels)) for _ in t.logical]
    w = _weights(limit)
    used = list(t.totals(idx))
    while limit.excess(*used) > 0:
        movable = [(i, lo) for i in range(len(idx)) if (lo := _down(t, i, idx[i], w)) is not None]
        if not movable:
            return None
        _move(t, idx, used, *rng.choice(movable))
    return idx
