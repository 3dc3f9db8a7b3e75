"""Focused local search near one profile's budget, starting from its best configuration so far.

Two kinds of move, alternated: give one layer a level more (most promising layer first by the sensitivity
model) and re-fit the budget by lowering the others greedily; or re-allocate the whole budget with noisy
sensitivities in a random one of the profile's variants. An improvement (by `selection_key`) becomes the new
starting point. Every proposal is within the profile's space and budget before it is scored.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from toolchain.bitconfig import BitConfig
from toolchain.evaluate import Metrics
from toolchain.search.allocate import CostTable, allocate, penalty
from toolchain.search.scoring import ScoreCache, selection_key
from toolchain.search.sensitivity import Sensitivity
from toolchain.search.space import Limit, SearchSpace, genome_of
from toolchain.search.spread import noisy

STALE_ROUNDS = 2


def local_search(
    space: SearchSpace,
    limit: Limit,
    sensitivity: Sensitivity,
    start: BitConfig,
    cache: ScoreCache,
    n_evals: int,
    rng: random.Random,
) -> tuple[BitConfig, Metrics]:
    """Best configuration found from `start` spending at most `n_evals` new evaluations of `cache`.

    Stops early after STALE_ROUNDS rounds in a row whose proposals were all scored already: the raise-one
    moves repeat exactly while the best stays, and each round already drew dozens of noisy re-allocations.
    (Without the bound a profile whose neighbourhood is exhausted spun through every round: 8,700
    allocations, about 20 s of the 5 shipped profiles' search, for 2 new scores.)
    """
    best, best_m = start, cache(start)
    budget_end = cache.evaluations + n_evals
    tables = {v: CostTable.build(space, v) for v in space.variants()}
    stale = 0
    for _ in range(20 * max(n_evals, 1)):  # bounds rounds whose proposals are all known already
        if cache.evaluations >= budget_end or stale >= STALE_ROUNDS:
            break
        before = cache.evaluations
        for config in _moves(space, tables, limit, sensitivity, best, rng):
            if cache.evaluations >= budget_end:
                break
            m = cache(config)
            if selection_key(config, m) < selection_key(best, best_m):
                best, best_m = config, m
                break  # restart the moves from the new best
        stale = stale + 1 if cache.evaluations == before else 0
    return best, best_m


def _moves(space, tables, limit, sensitivity, current: BitConfig, rng: random.Random) -> Iterator[BitConfig]:
    """Raise-one-layer moves (best estimated gain first) interleaved with noisy re-allocations."""
    bits, variant = genome_of(current)
    t = tables[variant]
    sens = sensitivity.aligned(space.specs)
    idx = t.index(bits)
    ref = sensitivity.ref_bits
    gain = {
        i: penalty(sens[i], t.levels[idx[i]], ref) - penalty(sens[i], t.levels[idx[i] + 1], ref)
        for i in range(len(idx))
        if idx[i] + 1 < len(t.levels)
    }
    order = sorted(gain, key=lambda i: (-gain[i], i))
    variants = list(tables)
    for i in order:
        raised = list(idx)
        raised[i] += 1
        moved = allocate(t, sens, limit, ref, start=raised, keep=frozenset({i}))
        if moved is not None and moved != idx:
            yield space.build(t.bits(moved), variant)
        other = tables[variants[rng.randrange(len(variants))]]
        fresh = allocate(other, noisy(sens, rng), limit, ref)
        if fresh is not None:
            yield space.build(other.bits(fresh), other.variant)
