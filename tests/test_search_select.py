"""Per-device selection on a toy analytic scorer and on the tiny model with post-training quantization."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from types import SimpleNamespace

import pytest
import torch
from search_baselines import beats, best_feasible_uniform, best_random, random_feasible, uniform_at_least
from search_constraints import check_constraints
from search_toy import ToyProblem, bert_like_specs

from toolchain.errors import BadInputError
from toolchain.evaluate import Metrics, metrics, predict_logits
from toolchain.models import load_model, quantizable_layers
from toolchain.profiles import ActivationQuant, load_profiles
from toolchain.quant.core import Scheme
from toolchain.quant.model import Rounding, quantize_model
from toolchain.search.plot import plot_front
from toolchain.search.scoring import quant_key
from toolchain.search.select import Rule, SearchSettings, select_configs
from toolchain.search.sensitivity import Sensitivity
from toolchain.search.space import SearchSpace

SPECS = bert_like_specs(2, 128, 256)  # 12 layers; per-channel scales cost 0.25 or 0.125 bits per weight
SETTINGS = SearchSettings(seed=0, proposals=3, rounds=2)


@pytest.fixture(scope="module")
def profiles(profiles_dir):
    return {p.name: p for p in load_profiles([profiles_dir])}


@pytest.fixture(scope="module")
def toy_result(profiles):
    toy = ToyProblem.make(SPECS, seed=2)
    return toy, select_configs(list(profiles.values()), SPECS, toy.metrics, settings=SETTINGS)


def test_every_choice_satisfies_its_profile(profiles, toy_result):
    _, result = toy_result
    assert [s.profile for s in result.selections] == list(profiles)
    for s in result.selections:
        assert check_constraints(profiles[s.profile], s.config, SPECS) == [], s.profile
        one_choice = len(profiles[s.profile].weights.bits) == 1  # x86_vnni_server: int8 only
        assert s.candidates_evaluated >= (1 if one_choice else 3), s.profile


@pytest.mark.parametrize("name", ["rpi5", "npu_int8"])  # x86_vnni_server: one choice (8 bits)
def test_choice_beats_uniform_of_same_or_larger_cost(profiles, toy_result, name):
    toy, result = toy_result
    chosen = result.selection(name)
    uniform = uniform_at_least(profiles[name], SPECS, toy.metrics, chosen.cost)
    assert uniform.cost.avg_bits >= chosen.cost.avg_bits
    assert beats(chosen.metrics, uniform.metrics), (chosen.metrics, uniform.metrics)


def test_choice_beats_feasible_uniform_and_best_of_20_random(profiles, toy_result):
    toy, result = toy_result
    for s in result.selections:
        p = profiles[s.profile]
        uniform = best_feasible_uniform(p, SPECS, toy.metrics)
        if len(p.weights.bits) == 1:  # one bit-width, one granularity: the uniform is the only choice
            assert quant_key(s.config) == quant_key(uniform.config), s.profile
            continue
        random20 = best_random(p, SPECS, toy.metrics, n=20, seed=1)
        assert random20.evaluated == 20
        assert all(check_constraints(p, c.config, SPECS) == [] for c in (uniform, random20))
        assert beats(s.metrics, uniform.metrics) or quant_key(s.config) == quant_key(uniform.config), s.profile
        assert beats(s.metrics, random20.metrics), s.profile


def test_search_is_deterministic_and_serialisable(profiles, toy_result):
    toy, first = toy_result
    again = select_configs(list(profiles.values()), SPECS, toy.metrics, settings=SETTINGS)
    assert [quant_key(s.config) for s in again.selections] == [quant_key(s.config) for s in first.selections]
    assert [p.key for p in again.front] == [p.key for p in first.front]
    assert json.dumps(again.to_dict()) == json.dumps(first.to_dict())  # search.json: the same bytes
    data = json.loads(json.dumps(first.to_dict()))
    assert data["evaluations"] == first.evaluations == len(first.evaluated)
    # probe 7, then per profile and variant: proposals and the uniform, then proposals per round
    variants = sum(len(SearchSpace.from_profile(p, SPECS).variants()) for p in profiles.values())
    assert first.stages["sensitivity"] == len(SPECS) + 1
    assert first.stages["proposals"] <= (SETTINGS.proposals + 1) * variants
    assert all(first.stages[f"round:{r}"] <= SETTINGS.proposals * variants for r in (1, 2))
    assert first.evaluations == sum(first.stages.values())


class NoisyCoupledProblem:
    """A scorer the allocator's model does not describe: the toy's per-layer terms plus an interaction (a
    block whose query and key are both below 4 bits loses 0.05 more than their two terms say), seen
    through deterministic noise of 20 % per configuration (as a validation subset sees the true loss)."""

    def __init__(self, seed: int):
        self.toy, self.seed = ToyProblem.make(SPECS, seed=seed), seed

    def true_loss(self, config) -> float:
        coupled = 0.0
        for block in {s.index for s in SPECS}:
            bits = {s.kind: config.layers[s.name].bits for s in SPECS if s.index == block}
            coupled += 0.05 if bits["attention.self.query"] < 4 and bits["attention.self.key"] < 4 else 0.0
        return self.toy.loss(config) + coupled

    def metrics(self, config) -> Metrics:
        digest = hashlib.sha256(f"{self.seed}/{quant_key(config)}".encode()).hexdigest()
        loss = self.true_loss(config) * math.exp(0.2 * random.Random(int(digest[:12], 16)).gauss(0, 1))
        acc = 100.0 * math.exp(-loss)
        return Metrics(accuracy=acc, macro_f1=acc, agreement=acc, kl=loss)


@pytest.mark.parametrize("seed", [0, 1])
def test_choice_beats_uniform_and_random_on_a_noisy_coupled_scorer(profiles, seed):
    """Judged by the true loss, which the search never sees: at least as good as the best feasible uniform
    configuration and better than the best of 20 random feasible ones, for every profile with a choice."""
    problem = NoisyCoupledProblem(seed)
    result = select_configs(list(profiles.values()), SPECS, problem.metrics, settings=SETTINGS)
    for s in result.selections:
        p = profiles[s.profile]
        assert check_constraints(p, s.config, SPECS) == [], s.profile
        if len(p.weights.bits) == 1:
            continue
        chosen = problem.true_loss(s.config)
        uniform = problem.true_loss(best_feasible_uniform(p, SPECS, problem.metrics).config)
        random20 = min(problem.true_loss(c) for c in random_feasible(p, SPECS, 20, seed=seed))
        assert chosen <= uniform + 1e-12 and chosen < random20, (s.profile, chosen, uniform, random20)


def test_unreachable_profile_fails_before_any_evaluation(profiles):
    calls = []
    specs = bert_like_specs(2, 32, 64)  # scales alone cost 0.875 bits per weight: 2.5 bits is out of reach
    with pytest.raises(BadInputError, match="aggressive_2bit.*2.75.*2.8750"):
        select_configs(list(profiles.values()), specs, lambda c: calls.append(c))
    assert calls == []


def test_tiny_model_end_to_end_with_post_training_quantization(profiles, tiny_model_path, tiny_data, tmp_path):
    model, tok = load_model(tiny_model_path, tiny_data.label_names)
    texts, labels = tiny_data.texts[::4], tiny_data.labels[::4]
    reference = predict_logits(model, tok, texts)
    specs = quantizable_layers(model)

    def score(config):
        return metrics(predict_logits(quantize_model(model, config, Rounding.RTN), tok, texts), labels, reference)

    # at hidden 32, scales cost 0.875 bits per weight: aggressive_2bit's 2.5 and x86_vnni_server's 8.5 are out of reach
    chosen = [p for n, p in profiles.items() if n not in ("aggressive_2bit", "x86_vnni_server")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a hidden-32 model runs 100x slower on two contended threads than on one
    try:
        result = select_configs(chosen, specs, score, settings=SearchSettings(proposals=2, rounds=1))
    finally:
        torch.set_num_threads(threads)
    for s in result.selections:
        assert check_constraints(profiles[s.profile], s.config, specs) == []
        assert s.metrics.kl is not None and s.metrics.kl > -1e-6
    png, svg = plot_front(result, tmp_path / "front", chosen)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first_svg = svg.read_bytes()
    plot_front(result, tmp_path / "front", chosen)
    assert svg.read_bytes() == first_svg  # no date, fixed ids: same result, same file
    assert b"rpi5" in first_svg


def test_given_sensitivity_is_used_without_probing(profiles, toy_result):
    toy, probed = toy_result
    assert probed.stages["sensitivity"] == len(SPECS) + 1  # one probe per layer, plus the reference
    given = Sensitivity(tuple(s.name for s in SPECS), tuple(range(1, len(SPECS) + 1)), 3, "loss")
    result = select_configs(list(profiles.values()), SPECS, toy.metrics, sensitivity=given, settings=SETTINGS)
    assert result.stages["sensitivity"] == 0 and result.costs.method == "sensitivity"
    for s in result.selections:
        assert check_constraints(profiles[s.profile], s.config, SPECS) == []


def test_exact_costs_give_the_optimum_at_the_first_score(profiles):
    """With the true per-layer losses as costs, each profile's first proposal is the exact optimum: it is
    chosen, and no random feasible configuration (of 200) is better by the true loss."""
    toy = ToyProblem.make(SPECS, seed=5)
    union = SearchSpace.union([SearchSpace.from_profile(p, SPECS) for p in profiles.values()])
    costs = toy.layer_costs(union)
    result = select_configs(list(profiles.values()), SPECS, toy.metrics, costs=costs, settings=SETTINGS)
    assert result.stages["sensitivity"] == 0
    for s in result.selections:
        p = profiles[s.profile]
        assert abs(costs.predicted(s.config) - toy.loss(s.config)) < 1e-12
        best_random = min(toy.loss(c) for c in random_feasible(p, SPECS, 200, seed=3))
        assert toy.loss(s.config) <= best_random + 1e-12, s.profile


def test_time_budget_scores_each_profiles_first_proposal_only(profiles):
    toy = ToyProblem.make(SPECS, seed=2)
    union = SearchSpace.union([SearchSpace.from_profile(p, SPECS) for p in profiles.values()])
    quick = SearchSettings(proposals=3, rounds=2, seconds=0.0)
    result = select_configs(list(profiles.values()), SPECS, toy.metrics, costs=toy.layer_costs(union), settings=quick)
    assert result.evaluations <= len(profiles)
    assert [s.profile for s in result.selections] == list(profiles)


def test_corrected_costs_fit_what_was_measured():
    """A scorer whose true loss weighs the value layers 3x the estimate: the correction finds 3 for them
    and 1 for the others (within what the points determine)."""
    from toolchain.search.select import _corrected

    toy = ToyProblem.make(SPECS, seed=1)
    space = SearchSpace(
        name="s", specs=tuple(SPECS), bits=(2, 3, 4, 8), schemes=(Scheme.SYMMETRIC,), block_sizes=(None,)
    )
    costs = toy.layer_costs(space)
    rng = random.Random(0)
    items = []
    for _ in range(20):
        config = space.build([rng.choice(space.bits) for _ in SPECS], space.variants()[0])
        per = costs.per_kind(config)
        true = sum(3 * c if k == "attention.self.value" else c for k, c in per.items()) + 0.01
        items.append((config, Metrics(90.0, 90.0, 90.0, true)))
    fitted = _corrected(costs, items)
    for c, m in items:
        assert fitted.predicted(c) == pytest.approx(m.kl - 0.01, rel=1e-6)
    assert _corrected(costs, items[:3]) is None  # fewer points than module types: nothing to fit


def _fake_search(monkeypatch, calls: list):
    """select_configs and merge_results replaced: each group's call recorded (profiles, score, kw)."""
    import toolchain.search

    def select(group, specs, score, **kw):
        calls.append((group, score, kw))
        return SimpleNamespace(sensitivity="probed")

    monkeypatch.setattr(toolchain.search, "select_configs", select)
    monkeypatch.setattr(toolchain.search, "merge_results", lambda parts, order: parts)


def test_build_search_computes_the_layer_costs_once_for_every_group(monkeypatch, profiles):
    """search_run estimates the layer costs once (from the run) and hands them to every group's search,
    with the time budget shared out by the groups' numbers of profiles."""
    from toolchain.build import device_search

    calls, computed = [], []
    _fake_search(monkeypatch, calls)
    monkeypatch.setattr(device_search, "run_layer_costs", lambda run, ps: computed.append(ps) or "costs")
    run = SimpleNamespace(specs=SPECS)
    settings = SearchSettings(seconds=60.0)
    device_search.search_run(
        run, list(profiles.values()), progress=False, settings=settings, scorer_for=lambda profile: (None, None)
    )
    assert len(computed) == 1 and len(calls) == len({_scored(p) for p in profiles.values()}) > 1
    assert all(kw["costs"] == "costs" for _, _, kw in calls)
    shares = [kw["settings"].seconds for _, _, kw in calls]
    assert sum(shares) == pytest.approx(60.0)
    assert shares == pytest.approx([60.0 * len(group) / len(profiles) for group, _, _ in calls])


def _scored(profile):
    from toolchain.build.device_search import arithmetic

    table, activations = arithmetic(profile)
    return None if table is None else table.model_dump_json(), activations


def test_build_search_scores_each_group_with_its_profiles_arithmetic(monkeypatch, profiles):
    """Profiles are searched in groups of one scored arithmetic (embedding table format, activation
    quantization), each scored with it; the shared front's evaluations are shared out over the
    groups."""
    from toolchain.build import device_search

    calls, built = [], []
    _fake_search(monkeypatch, calls)
    monkeypatch.setattr(device_search.SplitDocs, "of", lambda *a, **kw: pytest.fail("default scorer built"))

    def scorer_for(profile):
        built.append(_scored(profile))
        return (lambda config: (profile.name, config)), (lambda config: ("confirm", profile.name, config))

    run = SimpleNamespace(specs=SPECS)
    settings = SearchSettings(seconds=None)
    device_search.search_run(
        run, list(profiles.values()), progress=False, scorer_for=scorer_for, settings=settings, costs="costs"
    )
    assert sorted(p.name for group, _, _ in calls for p in group) == sorted(profiles)
    for (group, score, kw), scored in zip(calls, built, strict=True):
        assert {_scored(p) for p in group} == {scored}
        assert score("config") == (group[0].name, "config")
        assert kw["confirm"]("config") == ("confirm", group[0].name, "config")
        assert kw["costs"] == "costs"
    assert len(built) == len(set(built))
    assert {activations for _, activations in built} == set(ActivationQuant)  # each path is scored apart


def test_accuracy_rule_gives_ties_to_the_most_bits_not_to_kl(profiles):
    """Rule.ACCURACY: every configuration scores the same accuracy and KL grows with bits: KL would pick
    the cheapest; the selection takes the costliest feasible configuration it scored."""
    from toolchain.search.space import Limit

    scored = []

    def flat(config):
        scored.append(config)
        return Metrics(accuracy=90.0, macro_f1=90.0, agreement=95.0, kl=config.avg_bits / 100)

    rpi5 = profiles["rpi5"]
    result = select_configs([rpi5], SPECS, flat, settings=dataclasses.replace(SETTINGS, rule=Rule.ACCURACY))
    space, limit = (
        SearchSpace.from_profile(rpi5, SPECS),
        Limit.of_profile(rpi5, sum(s.out_features * s.in_features for s in SPECS)),
    )
    feasible = [a for c in scored if (a := space.adopt(c)) is not None and limit.admits(a)]
    chosen = result.selection("rpi5").config
    assert chosen.avg_bits == max(c.avg_bits for c in feasible)
    assert chosen.avg_bits > min(c.avg_bits for c in feasible)  # there was a cheaper tie to refuse


@pytest.mark.parametrize(
    ("tie", "expected"),
    [(0.0, "accurate"), (1.0, "low_kl"), (3.0, "lower_kl_far_off")],  # accuracy 90 / 89.5 / 87
)
def test_kl_rule_takes_the_lowest_kl_among_accuracies_within_the_tie(tie, expected):
    from toolchain.search.select import choose

    space = SearchSpace(name="s", specs=tuple(SPECS), bits=(2, 4, 8), schemes=(Scheme.SYMMETRIC,), block_sizes=(None,))
    v = space.variants()[0]
    scored = {
        "accurate": (space.build(8, v), Metrics(90.0, 90.0, 90.0, 0.30)),
        "low_kl": (space.build(4, v), Metrics(89.5, 89.5, 90.0, 0.10)),
        "lower_kl_far_off": (space.build(2, v), Metrics(87.0, 87.0, 90.0, 0.05)),
    }
    assert choose(list(scored.values()), Rule.KL, tie) is scored[expected]


def test_merged_groups_keep_every_selection_point_and_evaluation(profiles):
    """Searches over disjoint groups of profiles merge into one result: the selections in the profiles'
    order, every scored point, the evaluations and stages summed, and a front no merged point dominates."""
    from toolchain.search.pareto import pareto_indices
    from toolchain.search.select import merge_results

    toy = ToyProblem.make(SPECS, seed=2)
    names = list(profiles)
    groups = [names[:2], names[2:]]
    parts = [select_configs([profiles[n] for n in g], SPECS, toy.metrics, settings=SETTINGS) for g in groups]
    merged = merge_results(parts, list(reversed(names)))
    assert [s.profile for s in merged.selections] == list(reversed(names))
    assert merged.evaluations == sum(p.evaluations for p in parts)
    assert len(merged.evaluated) == sum(len(p.evaluated) for p in parts)
    assert merged.stages["proposals"] == sum(p.stages["proposals"] for p in parts)
    points = [(p.avg_bits, p.kl) for p in merged.evaluated]
    assert sorted(merged.front, key=lambda p: p.avg_bits) == sorted(
        (merged.evaluated[i] for i in pareto_indices(points)), key=lambda p: p.avg_bits
    )
    assert merge_results(parts[:1], names[:2]) is parts[0]
