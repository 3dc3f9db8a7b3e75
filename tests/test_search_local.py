"""Local search near a profile's budget: it stops once its neighbourhood is exhausted."""

from __future__ import annotations

import random

from search_toy import ToyProblem, bert_like_specs

from toolchain.profiles import load_profiles
from toolchain.search import local
from toolchain.search.allocate import CostTable, allocate
from toolchain.search.scoring import ScoreCache
from toolchain.search.sensitivity import Sensitivity
from toolchain.search.space import Limit, SearchSpace

SPECS = bert_like_specs(1, 128, 256)  # 6 layers: a neighbourhood small enough to exhaust


def _setup(profiles_dir, name):
    profile = next(p for p in load_profiles([profiles_dir]) if p.name == name)
    space = SearchSpace.from_profile(profile, SPECS)
    limit = Limit.of_profile(profile, sum(s.out_features * s.in_features for s in SPECS))
    sens = Sensitivity.uniform(SPECS, ref_bits=3)
    table = CostTable.build(space, space.variants()[0])
    start = space.build(table.bits(allocate(table, sens.values, limit, sens.ref_bits)), table.variant)
    return space, limit, sens, start


def test_exhausted_neighbourhood_ends_the_search(profiles_dir, monkeypatch):
    space, limit, sens, start = _setup(profiles_dir, "mcu_tiny")
    rounds = 0
    moves = local._moves

    def counted(*args):
        nonlocal rounds
        rounds += 1
        yield from moves(*args)

    monkeypatch.setattr(local, "_moves", counted)
    monkeypatch.setattr(local, "STALE_ROUNDS", 2)
    cache = ScoreCache(ToyProblem.make(SPECS, seed=0).metrics)
    best, best_m = local.local_search(space, limit, sens, start, cache, 500, random.Random(0))
    assert cache.evaluations < 500  # fewer distinct configurations than the budget: exhausted
    # every round either scored something new or was one of the last 2 (not 20 x 500 rounds)
    assert rounds <= cache.evaluations + 2
    assert limit.admits(best) and best_m == cache(best)


def test_local_search_spends_at_most_its_evaluations(profiles_dir):
    space, limit, sens, start = _setup(profiles_dir, "rpi5")
    cache = ScoreCache(ToyProblem.make(SPECS, seed=1).metrics)
    cache(start)
    before = cache.evaluations
    local.local_search(space, limit, sens, start, cache, 4, random.Random(0))
    assert cache.evaluations - before <= 4
