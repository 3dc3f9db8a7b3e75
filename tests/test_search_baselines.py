"""Baselines of the acceptance comparison: the cheapest uniform configuration within a cost, random feasible ones."""

from __future__ import annotations

import pytest
from search_baselines import best_feasible_uniform, random_feasible, uniform_at_least
from search_constraints import check_constraints
from search_toy import ToyProblem, bert_like_specs

from toolchain.profiles import Budget, load_profile
from toolchain.search.scoring import quant_key
from toolchain.search.space import Cost

SPECS = bert_like_specs(2, 128, 256)  # per-channel scales: 0.25 bits on 128 inputs, 0.125 on 256


@pytest.fixture(scope="module")
def rpi5(profiles_dir):
    """rpi5 with 4.25 bits over the searched layers alone (its whole-model budget, without the model)."""
    return load_profile(profiles_dir / "rpi5.yaml").model_copy(update={"budget": Budget(max_avg_bits=4.25)})


def test_uniform_at_least_is_the_cheapest_uniform_not_below(rpi5):
    toy = ToyProblem.make(SPECS)
    # uniform b per channel costs b + 0.21875 here (3/4 of weights have 128 inputs: 0.25; 1/4 have 256)
    base = uniform_at_least(rpi5, SPECS, toy.metrics, Cost(4.1, 0))
    assert base.config.bits_vector() == [4] * len(SPECS) and base.cost.avg_bits == pytest.approx(4.21875)
    above = uniform_at_least(rpi5, SPECS, toy.metrics, Cost(4.22, 0))
    # next up: 4 bits in blocks of 128 (4 + 32/128 = 4.25), the cheapest uniform configuration >= 4.22
    assert above.cost.avg_bits == pytest.approx(4.25) and above.config.layers[SPECS[0].name].block_size == 128
    assert uniform_at_least(rpi5, SPECS, toy.metrics, Cost(99.0, 0)) is None


def test_best_feasible_uniform_is_within_budget(rpi5):
    toy = ToyProblem.make(SPECS)
    best = best_feasible_uniform(rpi5, SPECS, toy.metrics)
    assert check_constraints(rpi5, best.config, SPECS) == []
    # within 4.25: 3 and 4 bits per channel and in blocks of 128, 3 bits in blocks of 64 and 32
    assert best.evaluated == 6


def test_random_feasible_configurations(rpi5):
    configs = random_feasible(rpi5, SPECS, 20, seed=3)
    assert len({quant_key(c) for c in configs}) == 20
    assert all(check_constraints(rpi5, c, SPECS) == [] for c in configs)
    assert [quant_key(c) for c in configs] == [quant_key(c) for c in random_feasible(rpi5, SPECS, 20, seed=3)]
    assert len({tuple(c.bits_vector()) for c in configs}) == 20
