"""Configurations spread across a space's bit budgets: the starting training set and search seeds.

Uniform anchors at every bit-width, then one sensitivity-greedy allocation per evenly spaced target budget,
cycling through the space's variants (scheme x granularity). Each allocation sees the sensitivities with
seeded multiplicative noise, so neighbouring targets do not all repeat one ordering of the layers.
"""

from __future__ import annotations

import math
import random

from toolchain.bitconfig import BitConfig
from toolchain.search.allocate import CostTable, allocate
from toolchain.search.scoring import quant_key
from toolchain.search.sensitivity import Sensitivity
from toolchain.search.space import Limit, SearchSpace

NOISE = 0.5  # sigma of the log-normal factor on each sensitivity: different but still sensible orderings


def cost_range(space: SearchSpace) -> tuple[float, float]:
    """Lowest and highest logical bits per weight of any configuration in `space`."""
    tables = [CostTable.build(space, v) for v in space.variants()]
    n = space.n_params
    lo = min(t.totals([0] * len(t.logical))[0] for t in tables) / n
    hi = max(t.totals([len(t.levels) - 1] * len(t.logical))[0] for t in tables) / n
    return lo, hi


def noisy(values: list[float], rng: random.Random, sigma: float = NOISE) -> list[float]:
    return [v * math.exp(sigma * rng.gauss(0.0, 1.0)) for v in values]


def spread_configs(
    space: SearchSpace, n: int, sensitivity: Sensitivity | None = None, seed: int = 0
) -> list[BitConfig]:
    """About `n` distinct configurations from the cheapest to the dearest the space allows."""
    rng = random.Random(seed)
    sens = sensitivity or Sensitivity.uniform(space.specs, ref_bits=min(space.bits))
    values = sens.aligned(space.specs)
    tables = [CostTable.build(space, v) for v in space.variants()]
    first = tables[0]
    anchors = [space.build(b, first.variant) for b in first.levels]
    if len(anchors) >= n:
        return [anchors[round(k * (len(anchors) - 1) / max(n - 1, 1))] for k in range(n)]
    out = {quant_key(c): c for c in anchors}
    lo, hi = cost_range(space)
    m = n - len(anchors)
    for j in range(4 * m):  # later passes retry targets whose first allocation repeated a configuration
        if len(out) >= n:
            break
        target = lo + (hi - lo) * ((j % m) + 1) / (m + 1)
        config = at_target(space, tables, j, target, noisy(values, rng), sens.ref_bits)
        if config is not None:
            out.setdefault(quant_key(config), config)
    return sorted(out.values(), key=lambda c: (c.avg_bits, quant_key(c)))


def guided_configs(
    space: SearchSpace, edges: list[float], n: int, sensitivity: Sensitivity, rng: random.Random
) -> list[BitConfig]:
    """n sensitivity-greedy proposals, one per budget bin in turn, at a random budget inside the bin."""
    tables = [CostTable.build(space, v) for v in space.variants()]
    values = sensitivity.aligned(space.specs)
    out = []
    for k in range(n):
        b = k % (len(edges) - 1)
        target = rng.uniform(edges[b], edges[b + 1])
        config = at_target(space, tables, rng.randrange(len(tables)), target, noisy(values, rng), sensitivity.ref_bits)
        if config is not None:
            out.append(config)
    return out


def at_target(space: SearchSpace, tables: list[CostTable], j: int, target: float, sens, ref_bits: int):
    """Greedy allocation at `target` bits per weight in variant j (or the next one able to reach it)."""
    limit = Limit.avg_bits(target, space.n_params)
    for k in range(len(tables)):
        t = tables[(j + k) % len(tables)]
        idx = allocate(t, sens, limit, ref_bits)
        if idx is not None:
            return space.build(t.bits(idx), t.variant)
    return None
