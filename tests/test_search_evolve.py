"""NSGA-II proposals: encoding, evaluation budget, rejection and repair, determinism."""

from __future__ import annotations

import pytest
from search_toy import ToyProblem, bert_like_specs

from toolchain.profiles import load_profile
from toolchain.quant.core import Scheme
from toolchain.search.evolve import config_of, evolve, params_of
from toolchain.search.scoring import ScoreCache, quant_key
from toolchain.search.space import Limit, SearchSpace, Variant
from toolchain.search.spread import spread_configs

SPECS = bert_like_specs(2, 64, 128)


@pytest.fixture(scope="module")
def space(profiles_dir):
    return SearchSpace.from_profile(load_profile(profiles_dir / "rpi5.yaml"), SPECS)


def test_params_round_trip_and_unstorable_widths_move_up(profiles_dir, space):
    config = space.build([3, 4, 5, 6, 8, 3] * 2, Variant(Scheme.SYMMETRIC, 64))
    assert config_of(space, params_of(space, config)) == config
    agg = SearchSpace.from_profile(load_profile(profiles_dir / "aggressive_2bit.yaml"), SPECS)
    params = params_of(agg, agg.build(2, Variant(Scheme.SYMMETRIC, None)))
    assert config_of(agg, params).bits_vector() == [2] * len(SPECS)


def test_scores_exactly_n_new_configurations(space):
    toy = ToyProblem.make(SPECS)
    cache = ScoreCache(toy.loss)
    parents = spread_configs(space, 8, seed=0)
    for p in parents:
        cache(p)
    children = evolve(space, parents, cache, float, n_new=10, seed=0)
    assert cache.evaluations == 8 + 10
    assert {quant_key(c) for c, _ in children} <= {quant_key(c) for c, _ in cache.items()}
    assert all(v == toy.loss(c) for c, v in children)


def test_rejected_children_are_never_scored(space):
    toy = ToyProblem.make(SPECS)
    cache = ScoreCache(toy.loss)
    parents = spread_configs(space, 8, seed=0)
    for p in parents:
        cache(p)
    limit = Limit.avg_bits(5.0, space.n_params)
    children = evolve(space, parents, cache, float, n_new=5, seed=1, repair=lambda c: c if limit.admits(c) else None)
    assert children and all(c.avg_bits <= 5.0 for c, _ in children)
    new = [c for c, _ in cache.items()][8:]
    assert all(c.avg_bits <= 5.0 for c in new)


def test_evolve_is_deterministic(space):
    def run(seed):
        toy = ToyProblem.make(SPECS)
        cache = ScoreCache(toy.loss)
        return [quant_key(c) for c, _ in evolve(space, spread_configs(space, 6), cache, float, n_new=6, seed=seed)]

    assert run(3) == run(3)
    assert run(3) != run(4)
