"""Training configuration sets: spread start, Pareto refinement, determinism, recorded history."""

from __future__ import annotations

import json
import random

import pytest
from search_toy import ToyProblem, bert_like_specs
from spread_source import SpreadOnlySource

from toolchain.config_source import ConfigSource
from toolchain.profiles import load_profiles
from toolchain.search.refine import ParetoConfigSource
from toolchain.search.scoring import quant_key
from toolchain.search.sensitivity import module_type
from toolchain.search.spread import cost_range

SPECS = bert_like_specs(2, 64, 128)


@pytest.fixture(scope="module")
def profiles(profiles_dir):
    return load_profiles([profiles_dir])


def _run(profiles, seed=0, rounds=3, **kw):
    toy = ToyProblem.make(SPECS, seed=1)
    src = ParetoConfigSource.for_profiles(profiles, SPECS, seed=seed, **kw)
    for r in range(rounds):
        src.refine(100 * r, toy.loss)
    return src


def test_initial_set_spreads_across_budgets(profiles):
    src: ConfigSource = ParetoConfigSource.for_profiles(profiles, SPECS, set_size=16)
    lo, hi = cost_range(src.space)
    costs = sorted(c.avg_bits for c in src.configs)
    assert len(src.configs) == 16 and len({quant_key(c) for c in src.configs}) == 16
    assert costs[0] == pytest.approx(lo) and costs[-1] >= lo + 0.8 * (hi - lo)
    gaps = [b - a for a, b in zip(costs, costs[1:])]
    assert max(gaps) < (hi - lo) / 3  # no large hole in the budget range
    assert all(src.space.adopt(c) == c for c in src.configs)


def test_sample_is_seeded_and_without_replacement(profiles):
    src = ParetoConfigSource.for_profiles(profiles, SPECS, set_size=8)
    a = src.sample(random.Random(5), 8)
    assert [quant_key(c) for c in a] == [quant_key(c) for c in src.sample(random.Random(5), 8)]
    assert len({quant_key(c) for c in a}) == 8
    assert len(src.sample(random.Random(5), 20)) == 20


def test_refinement_raises_hypervolume_on_toy_problem(profiles):
    toy = ToyProblem.make(SPECS, seed=1)
    spread = SpreadOnlySource.for_profiles(profiles, SPECS, seed=0)
    spread.refine(0, toy.loss)
    start = spread.history[0]["set_hypervolume"]
    src = _run(profiles, rounds=4, hv_reference=tuple(spread.history[0]["reference"]))
    hv = [h["set_hypervolume"] for h in src.history]
    assert hv[-1] > start * 1.001, (start, hv)
    assert all(b >= a * (1 - 1e-3) for a, b in zip(hv, hv[1:]))  # kept fronts are not thrown away


def test_refine_keeps_set_size_and_evaluation_budget(profiles):
    src = _run(profiles, rounds=2, set_size=12, n_bins=4, candidates_per_round=8)
    assert src.probe_evaluations == len(SPECS) + 1
    for h in src.history:
        assert h["evaluations"] <= 12 + 8
        assert len(h["set"]) <= 12
    assert len(src.configs) == len(src.history[-1]["set"])


def test_probing_by_module_type_shares_one_value_per_type(profiles):
    src = _run(profiles, rounds=1, probe_group=module_type)
    assert src.probe_evaluations == len({s.kind for s in SPECS}) + 1 < len(SPECS) + 1
    values = dict(zip(src.sensitivity.names, src.sensitivity.values))
    for kind in {s.kind for s in SPECS}:
        assert len({values[s.name] for s in SPECS if s.kind == kind}) == 1


def test_refinement_is_deterministic_and_history_is_json(profiles):
    a, b = _run(profiles, seed=7), _run(profiles, seed=7)
    assert [quant_key(c) for c in a.configs] == [quant_key(c) for c in b.configs]
    assert json.dumps(a.history) == json.dumps(b.history)
    back = json.loads(json.dumps(a.history))
    assert [h["round"] for h in back] == [0, 1, 2]
    assert {"step", "hypervolume", "reference", "front", "set"} <= set(back[0])
    c = _run(profiles, seed=8)
    assert [quant_key(x) for x in c.configs] != [quant_key(x) for x in a.configs]


def test_diverged_scores_are_dropped(profiles):
    src = ParetoConfigSource.for_profiles(profiles, SPECS, set_size=8, candidates_per_round=4, probe_sensitivity=False)
    toy = ToyProblem.make(SPECS)
    src.refine(0, lambda c: float("nan") if c.avg_bits > 6 else toy.loss(c))
    assert src.configs and all(c.avg_bits <= 6 for c in src.configs)


def test_state_dict_round_trip_resumes_the_same_refinement(profiles):
    toy = ToyProblem.make(SPECS, seed=1)
    whole = _run(profiles, seed=3, rounds=3)
    first = _run(profiles, seed=3, rounds=2)
    saved = json.loads(json.dumps(first.state_dict()))  # a checkpoint stores it as JSON
    resumed = ParetoConfigSource.for_profiles(profiles, SPECS, seed=3)
    assert [quant_key(c) for c in resumed.configs] != [quant_key(c) for c in first.configs]
    resumed.load_state_dict(saved)
    resumed.refine(200, toy.loss)
    assert [quant_key(c) for c in resumed.configs] == [quant_key(c) for c in whole.configs]
    assert json.dumps(resumed.history) == json.dumps(whole.history)
    assert resumed.probe_evaluations == whole.probe_evaluations
