"""Greedy and random bit allocation, and per-layer sensitivity."""

from __future__ import annotations

import json
import random

import pytest
from search_toy import ToyProblem, bert_like_specs

from toolchain.models import load_model, quantizable_layers
from toolchain.profiles import load_profile, load_profiles
from toolchain.quant.core import Scheme
from toolchain.search.allocate import CostTable, allocate, penalty, random_levels
from toolchain.search.sensitivity import Sensitivity, loss_sensitivity, weight_sensitivity
from toolchain.search.space import Limit, SearchSpace, Variant

SPECS = bert_like_specs(2, 64, 128)
PER_CHANNEL = Variant(Scheme.SYMMETRIC, None)


@pytest.fixture
def space(profiles_dir):
    return SearchSpace.from_profile(load_profile(profiles_dir / "rpi5.yaml"), SPECS)


def test_penalty_model():
    assert penalty(1.0, 2, 2) == 1.0 and penalty(1.0, 4, 2) == 1 / 16
    assert penalty(-3.0, 2, 2) == 0.0


def test_greedy_meets_budget_and_favours_sensitive_layers(space):
    table = CostTable.build(space, PER_CHANNEL)
    sens = [1.0] * len(SPECS)
    sens[0], sens[5] = 100.0, 0.01
    limit = Limit.avg_bits(4.6, space.n_params)
    idx = allocate(table, sens, limit, ref_bits=2)
    config = space.build(table.bits(idx), PER_CHANNEL)
    assert config.avg_bits <= 4.6
    bits = table.bits(idx)
    assert bits[0] == max(bits) and bits[5] == min(bits)
    # the fill phase leaves no room: raising any layer by one level breaks the budget
    for i in range(len(idx)):
        if idx[i] + 1 < len(table.levels):
            raised = list(idx)
            raised[i] += 1
            assert limit.excess(*table.totals(raised)) > 0


def test_greedy_returns_none_below_the_cheapest(space):
    table = CostTable.build(space, PER_CHANNEL)
    cheapest = table.totals([0] * len(SPECS))[0] / space.n_params
    assert allocate(table, [1.0] * len(SPECS), Limit.avg_bits(cheapest - 0.01, space.n_params), 2) is None
    assert allocate(table, [1.0] * len(SPECS), Limit.avg_bits(cheapest, space.n_params), 2) == [0] * len(SPECS)


def test_greedy_skips_levels_that_save_no_container_bytes(profiles_dir):
    """Under a container-byte cap, 8 -> 4 bits saves bytes; 4 -> 3 -> 2 in int4 saves none."""
    mcu = load_profile(profiles_dir / "mcu_tiny.yaml")
    space = SearchSpace.from_profile(mcu, SPECS)
    table = CostTable.build(space, PER_CHANNEL)
    all_int4 = table.totals([0] * len(SPECS))[1]
    idx = allocate(table, [1.0] * len(SPECS), Limit(max_container_bytes=all_int4), ref_bits=2)
    assert table.bits(idx) == [4] * len(SPECS)  # the fill phase raises 2 -> 4 for free


def test_random_levels_are_feasible_and_seeded(space):
    table = CostTable.build(space, PER_CHANNEL)
    limit = Limit.avg_bits(4.0, space.n_params)
    a = [random_levels(table, limit, random.Random(s)) for s in range(10)]
    assert a == [random_levels(table, limit, random.Random(s)) for s in range(10)]
    assert all(limit.excess(*table.totals(idx)) == 0 for idx in a)
    assert len({tuple(x) for x in a}) > 5


def test_loss_sensitivity_recovers_the_toy_weights(space):
    toy = ToyProblem.make(SPECS, seed=3)
    sens = loss_sensitivity(toy.loss, space)
    assert sens.ref_bits == 3 and sens.method == "loss"
    # layer alone at 3 bits (7 levels) vs 8 bits (255 levels): w * (1/36 - 1/254^2)
    for s, w in zip(sens.values, toy.weights):
        assert s == pytest.approx(w * (1 / 36 - 1 / 254**2), rel=1e-9)


def test_loss_sensitivity_by_group_shares_the_rise(space):
    toy = ToyProblem.make(SPECS, seed=3)
    calls = []
    sens = loss_sensitivity(lambda c: calls.append(c) or toy.loss(c), space, group=lambda s: s.kind)
    assert len(calls) == 1 + 6  # base + one per module type
    assert sens.values[0] == sens.values[6]  # query of block 0 and block 1 share their group's rise


def test_sensitivity_round_trips_through_json(space):
    sens = loss_sensitivity(ToyProblem.make(SPECS).loss, space)
    back = Sensitivity.from_dict(json.loads(json.dumps(sens.to_dict())))
    assert back == sens
    assert back.aligned(list(reversed(SPECS))) == list(reversed(sens.values))


def test_weight_sensitivity_on_tiny_model(tiny_model_path):
    model, _ = load_model(tiny_model_path, ["a", "b", "c"])
    specs = quantizable_layers(model)
    sens = weight_sensitivity(model, specs, bits=2)
    assert len(sens.values) == len(specs) and all(0 < v < 2 for v in sens.values)
    finer = weight_sensitivity(model, specs, bits=4)
    assert all(f < c for f, c in zip(finer.values, sens.values))


def test_probe_avoids_ternary_two_bits_unless_asked(profiles_dir):
    union = SearchSpace.union([SearchSpace.from_profile(p, SPECS) for p in load_profiles([profiles_dir])])
    toy = ToyProblem.make(SPECS)
    assert loss_sensitivity(toy.loss, union, group=lambda s: s.kind).ref_bits == 3
    two = loss_sensitivity(toy.loss, union, low_bits=2)
    # 2 bits symmetric is ternary: 3 levels, loss w * (1/4 - 1/254^2)
    assert two.ref_bits == 2 and two.values[0] == pytest.approx(toy.weights[0] * (1 / 4 - 1 / 254**2))
