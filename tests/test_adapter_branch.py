"""The int8 adapter branch on a tiny model: a branch-trained run beside a merged one, its generated factors,
its export, and the build's merged-or-branch choice."""

from __future__ import annotations

import random

import onnx
import pytest
import torch
from search_constraints import check_constraints
from tiny import tiny_model_dir, tiny_train_settings

from toolchain.adapter import ForwardMode, Grid, RandomConfigSource, Run, run_files, train
from toolchain.bitconfig import config_from_bits
from toolchain.build.branch import BRANCH, MERGED, branch_ranks, choose_variant
from toolchain.build.branch_training import shrunk_profile
from toolchain.errors import BadInputError
from toolchain.evaluate import Metrics, encode, predict_logits
from toolchain.exporters import export_model, twin_of
from toolchain.io import sha256_file
from toolchain.profiles import Budget, default_profiles_dir, load_profile
from toolchain.quant.core import Scheme
from toolchain.search import SearchSpace, Selection, Sensitivity, cost_of
from toolchain.search.fisher import LayerCosts
from toolchain.validators import validate

SETTINGS = tiny_train_settings(bits=[2, 3, 4], grids=[Grid(), Grid(scheme=Scheme.ASYMMETRIC)])


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory) -> tuple[Run, Run]:
    """(merged run, branch run sharing its float stage); 128 positions: the latency check feeds 128 tokens."""
    root = tmp_path_factory.mktemp("branch")
    model = tiny_model_dir(root / "model", max_positions=128)
    merged = train(model, tiny_data, root / "merged", SETTINGS, progress=False)
    run_files.share_float_stages(merged.run_dir, root / "branch")
    branch_settings = SETTINGS.model_copy(update={"forward": ForwardMode.BRANCH})
    return merged, train(model, tiny_data, root / "branch", branch_settings, progress=False)


def _config(run: Run, seed: int = 1):
    return RandomConfigSource(run.specs, SETTINGS.bits, SETTINGS.grids).sample(random.Random(seed), 1)[0]


def test_branch_run_reuses_the_float_stage(runs):
    merged, branch = runs
    for f in sorted((merged.run_dir / run_files.FLOAT_DIR).iterdir()):
        assert sha256_file(f) == sha256_file(branch.run_dir / run_files.FLOAT_DIR / f.name)
        assert f.stat().st_ino == (branch.run_dir / run_files.FLOAT_DIR / f.name).stat().st_ino  # linked, not copied
    assert "float_finetune" not in branch.info["timings_s"]  # shared, not trained again
    assert branch.float_accuracy == merged.float_accuracy


def test_branch_factors_are_int8_beside_the_frozen_integers(runs):
    merged, branch = runs
    config = _config(branch).model_copy(update={"branch_rank": 2})
    weights = branch.generate(config)
    base = branch.ptq_weights(config)
    assert set(weights) == set(config.stored_layers())
    for name, spec in ((s.name, s) for s in branch.specs):
        assert torch.equal(weights[name].q, base[name].q)  # the base integers do not move in branch form
        down, up = weights[name + ".branch.down"], weights[name + ".branch.up"]
        assert down.shape == (2, spec.in_features) and up.shape == (spec.out_features, 2)
        for f in (down, up):
            assert (f.bits, f.scheme, f.block_size) == (8, Scheme.SYMMETRIC, None)
            assert int(f.q.abs().max()) == 127  # absmax per row: each row's largest entry is +-127


def test_int8_branch_keeps_what_the_trained_branch_adds(runs):
    """The shipped model (int8 factors) is much closer to the training forward (float factors) than the same
    integers without the branch are: rounding the factors to int8 keeps the branch's effect."""
    _, branch = runs
    config = _config(branch, 3).model_copy(update={"branch_rank": SETTINGS.rank})
    texts = branch.splits.test.texts[:16]
    shipped = predict_logits(branch.quantized_model(config), branch.tokenizer, texts, 32)
    no_branch = dict(branch.generate(config))
    for n in list(no_branch):
        if ".branch." in n:
            del no_branch[n]
    from toolchain.quant.model import apply_quantized

    bare = predict_logits(apply_quantized(branch._deploy, no_branch), branch.tokenizer, texts, 32)
    coa = branch.adapter_model
    coa.set_config(config, SETTINGS.rank)
    with torch.no_grad():
        trained = coa(**encode(branch.tokenizer, texts, 32))
    branch_effect = (bare - trained).abs().max().item()
    assert branch_effect > 1e-2  # the branch learned something
    assert (shipped - trained).abs().max().item() < 0.1 * branch_effect


def test_a_merged_run_refuses_a_branch_configuration(runs):
    merged, _ = runs
    with pytest.raises(BadInputError, match="an adapter branch needs a run trained with forward 'branch'"):
        merged.generate(_config(merged).model_copy(update={"branch_rank": 2}))


def test_branch_rank_and_rank_must_agree(runs):
    _, branch = runs
    with pytest.raises(BadInputError, match="rank: 3, but the configuration's branch_rank is 2"):
        branch.generate(_config(branch).model_copy(update={"branch_rank": 2}), rank=3)


def test_exported_branch_runs_in_onnxruntime_as_in_torch(runs, tmp_path):
    """Export of an adapter-branch package: the int8 factors are DequantizeLinear initializers, the graph
    computes what the torch twin does, and the size check measures the branch's bytes in the graph."""
    _, branch = runs
    agg = load_profile(default_profiles_dir() / "aggressive_2bit.yaml")
    profile = agg.model_copy(update={"budget": Budget(max_avg_bits=8)})  # tiny layers: fp32 scales are dear
    config = config_from_bits(branch.specs, 3, scheme=Scheme.ASYMMETRIC, containers=agg.weights.container_for)
    config = config.model_copy(update={"branch_rank": 2})
    assert check_constraints(profile, config, branch.specs) == []
    qmodel = branch.quantized_model(config)
    export = export_model(qmodel, branch.tokenizer, profile, config, tmp_path / "model.onnx", max_length=32)
    assert export.weight_container_bytes == config.container_bytes
    test = branch.splits.test
    reference = predict_logits(twin_of(qmodel, export), branch.tokenizer, test.texts[:24], 32).numpy()
    report = validate(
        tmp_path / "model.onnx",
        profile,
        tokenizer=branch.tokenizer,
        texts=test.texts,
        labels=test.labels,
        reference_logits=reference,
        float_reference_accuracy=branch.float_accuracy,
        float_onnx_path=export.float_model_path,
        max_length=32,
    )
    checks = report.to_dict()["checks"]
    assert report.passed, report.failures
    assert checks["size"]["weight_container_bytes"] == config.container_bytes
    assert checks["size"]["logical_bits_per_weight"] == pytest.approx(config.avg_bits)
    assert checks["fidelity"]["exact"]["max_abs_diff"] <= 1e-4  # onnxruntime, optimizations off, vs the twin
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    int8 = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    head = {"classifier.qweight", "bert.pooler.dense.qweight"}  # aggressive_2bit's int8 head
    assert int8 == {f"{n}.qweight" for n in config.branch_layers()} | head  # every factor, stored as int8


def _metrics(acc: float, kl: float = 0.01) -> Metrics:
    return Metrics(accuracy=acc, macro_f1=acc, agreement=acc, kl=kl)


def _merged_selection(profile, specs, acc: float) -> Selection:
    config = config_from_bits(specs, 2, containers=profile.weights.container_for)  # 2.06 bits: within 2.3
    return Selection(profile.name, config, cost_of(config), _metrics(acc), 1)


@pytest.fixture
def agg_wide():
    """aggressive_2bit on layers wide enough (512) for a 2.5-bit budget to leave room for a branch."""
    from search_toy import bert_like_specs

    agg = load_profile(default_profiles_dir() / "aggressive_2bit.yaml")
    return agg.model_copy(update={"budget": Budget(max_avg_bits=2.5)}), bert_like_specs(1, 512, 1024)  # layers only


def _flat_costs(profile, specs) -> LayerCosts:
    """Every layer equally sensitive: the layer costs of a flat sensitivity."""
    sens = Sensitivity(tuple(s.name for s in specs), tuple(1.0 for _ in specs), 3, "loss")
    return LayerCosts.from_sensitivity(sens, SearchSpace.from_profile(profile, specs))


@pytest.mark.parametrize(
    ("branch_acc", "branch_kl", "use_branch"),
    [(90.0, 0.01, True), (80.0, 0.01, False), (85.0, 0.01, False), (85.0, 0.001, False)],
)
def test_the_build_ships_the_branch_only_when_it_scores_better(agg_wide, branch_acc, branch_kl, use_branch):
    """Strictly more accurate on validation; a tie stays merged even when the branch's KL is lower."""
    profile, specs = agg_wide
    merged = _merged_selection(profile, specs, 85.0)
    scored = []

    def score(config):
        scored.append(config)
        return _metrics(branch_acc, branch_kl)

    choice = choose_variant(profile, merged, 8, specs, score, _flat_costs(profile, specs), branch_ranks(8))
    assert scored and all(c.branch_rank in (8, 4, 2, 1) for c in scored)  # scored as shipped, with its rank
    assert choice.use_branch is use_branch
    chosen = choice.chosen.config
    assert check_constraints(profile, chosen, specs) == []  # the branch's bytes fit the budget
    v = choice.variant()
    assert v["weights"] == (BRANCH if use_branch else MERGED)
    assert v["rank"] == (chosen.branch_rank if use_branch else 8)
    assert v["validation"]["merged"]["accuracy"] == 85.0 and v["validation"]["branch"]["accuracy"] == branch_acc


def test_a_rank_whose_branch_alone_breaks_the_budget_is_not_tried(agg_wide):
    profile, specs = agg_wide
    tight = profile.model_copy(update={"budget": Budget(max_avg_bits=2.3)})
    merged = _merged_selection(tight, specs, 85.0)
    assert shrunk_profile(tight, merged.config, 128) is None  # rank 128 alone costs over 2.3 bits / weight
    costs = _flat_costs(tight, specs)
    choice = choose_variant(tight, merged, 8, specs, lambda c: _metrics(99.0), costs, [128, 64, 1])
    # rank 64 leaves under 0.3 bits for the base, below the cheapest 2-bit configuration
    assert choice.ranks_tried[128] is None and choice.ranks_tried[64] is None and choice.ranks_tried[1] is not None
    assert choice.chosen.config.branch_rank == 1
    assert check_constraints(tight, choice.chosen.config, specs) == []


def test_branch_ranks_halve_to_one():
    assert branch_ranks(8) == [8, 4, 2, 1] and branch_ranks(1) == [1] and branch_ranks(6) == [6, 3, 1]


def test_the_branch_run_trains_only_on_bases_a_branch_profile_can_afford(agg_wide):
    """Every admitted base fits aggressive_2bit's budget beside a rank-1 branch; costlier bases are not."""
    from toolchain.adapter import FilteredConfigSource
    from toolchain.build.branch_training import branch_training_filter, branch_training_source

    profile, specs = agg_wide
    admits = branch_training_filter([profile], specs)
    spread = RandomConfigSource(specs, bits=[2, 3, 4], grids=[Grid(), Grid(scheme=Scheme.ASYMMETRIC)])
    drawn = spread.sample(random.Random(0), 60)
    kept = [c for c in drawn if admits(c)]
    assert 0 < len(kept) < len(drawn)
    for c in kept:
        assert check_constraints(profile, c.model_copy(update={"branch_rank": 1}), specs) == []
    for c in drawn:
        if not admits(c):
            assert check_constraints(profile, c.model_copy(update={"branch_rank": 1}), specs) != []
    trained_on = FilteredConfigSource(spread, admits).sample(random.Random(1), 20)
    assert all(admits(c) for c in trained_on)
    source = branch_training_source([profile], specs, [2, 3, 4], [Grid(), Grid(scheme=Scheme.ASYMMETRIC)])
    assert source.fallback.bits_vector() == [2] * len(specs) and admits(source.fallback)


def test_no_branch_run_when_no_profile_can_afford_a_branch(agg_wide):
    from search_toy import bert_like_specs

    from toolchain.build.branch_training import branch_training_filter

    profile, specs = agg_wide
    assert branch_training_filter([profile.model_copy(update={"adapter_branch": False})], specs) is None
    narrow = bert_like_specs(1, 128, 256)  # a rank-1 branch's row scales alone take 2.5-bit room away
    assert branch_training_filter([profile], narrow) is None


def test_the_branch_run_is_keyed_by_the_budgets_it_trains_for(agg_wide, tmp_path):
    from toolchain.build.branch_training import branch_run_dir, branch_steps

    profile, _ = agg_wide
    looser = profile.model_copy(update={"budget": Budget(max_avg_bits=3.0)})
    a, b = branch_run_dir(tmp_path / "run-x", "d", [profile]), branch_run_dir(tmp_path / "run-x", "d", [looser])
    assert a != b and a.name.startswith("run-x-branch-")
    assert branch_run_dir(tmp_path / "run-x", "d", [profile]) == a
    assert (branch_steps(200), branch_steps(1), branch_steps(0)) == (100, 1, 0)


def test_edgeq_train_forward_branch_trains_a_branch_run(tiny_model_path, tmp_path):
    """`edgeq train --forward branch`: a run whose configurations can carry an int8 branch (`edgeq export`)."""
    from tiny import write_tiny_corpus

    from toolchain.cli import main

    data, out = write_tiny_corpus(tmp_path / "data"), tmp_path / "run"
    args = ["train", "--model", str(tiny_model_path), "--data", str(data), "--out", str(out), "--steps", "2"]
    assert main([*args, "--forward", "branch"]) == 0
    run = Run.load(out)
    assert run.settings.forward is ForwardMode.BRANCH and run.settings.steps == 2
    config = config_from_bits(run.specs, 4).model_copy(update={"branch_rank": 1})
    weights = run.generate(config)
    assert len(weights) == len(config.stored_layers())  # base integers plus both factors per layer
    assert main([*args, "--forward", "sideways"]) == 2  # argparse: bad input
