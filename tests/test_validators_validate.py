"""validate() on tiny exports: a good model passes every check; a bad one reports every failure at once, and
the JSON report is written either way."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from tiny import tiny_corpus, tiny_model_dir

from toolchain.bitconfig import config_from_bits
from toolchain.errors import ValidationFailedError
from toolchain.evaluate import DEFAULT_MAX_LENGTH, metrics, predict_logits
from toolchain.exporters import export_model, twin_of
from toolchain.models import load_model, quantizable_layers
from toolchain.profiles import default_profiles_dir, load_profile
from toolchain.quant.core import Scheme
from toolchain.quant.model import quantize_model
from toolchain.validators import cross_check as cross_check_module
from toolchain.validators import runner, validate

CORPUS = tiny_corpus()
TEXTS, LABELS = CORPUS.texts[1::4], CORPUS.labels[1::4]
SEQ = 32  # the tiny model has 64 positions


def _profile(name):
    return load_profile(default_profiles_dir() / f"{name}.yaml")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 3-bit per-channel rpi5 export (int4 containers, weight-only; 3.9 logical bits on the tiny model)."""
    torch.set_num_threads(2)
    model, tok = load_model(tiny_model_dir(tmp_path_factory.mktemp("tiny")), CORPUS.label_names)
    profile = _profile("rpi5")
    cfg = config_from_bits(quantizable_layers(model), 3, containers=profile.weights.container_for)
    qmodel = quantize_model(model, cfg)
    result = export_model(qmodel, tok, profile, cfg, tmp_path_factory.mktemp("rpi5") / "model.onnx")
    reference = predict_logits(twin_of(qmodel, result), tok, TEXTS).numpy()
    float_acc = metrics(predict_logits(model, tok, TEXTS), LABELS).accuracy
    return profile, tok, result, reference, float_acc


def _validate(setup, **overrides):
    profile, tok, result, reference, float_acc = setup
    kwargs = dict(
        tokenizer=tok,
        texts=TEXTS,
        labels=LABELS,
        reference_logits=reference,
        float_reference_accuracy=float_acc,
        float_onnx_path=result.float_model_path,
        latency_shapes=((1, SEQ), (8, SEQ)),
        latency=False,
    )
    path = overrides.pop("model_path", result.model_path)
    return validate(path, overrides.pop("profile", profile), **(kwargs | overrides))


def test_good_export_passes_every_check(setup):
    report = _validate(setup, latency=True)
    assert report.passed, report.failures
    checks = report.to_dict()["checks"]
    assert set(checks) == {"ops", "profile", "size", "kernels", "fidelity", "accuracy", "cross_check", "latency"}
    assert (
        checks["fidelity"]["exact"]["max_abs_diff"] <= 1e-4 and checks["fidelity"]["exact"]["top1_agreement"] == 100.0
    )
    assert checks["fidelity"]["device"] is not None
    assert checks["cross_check"]["max_abs_diff"] <= 1e-4
    assert checks["size"]["weight_container_bytes"] == checks["size"]["expected_container_bytes"]
    shapes = {f"1x{SEQ}", f"8x{SEQ}"}
    assert set(checks["latency"]["ms"]) == {"package", "float", "quantize_dynamic"}
    assert all(set(by_shape) == shapes for by_shape in checks["latency"]["ms"].values())
    assert set(checks["latency"]["ratios"]["float"]) == shapes and checks["latency"]["host"]["threads"] == "2"
    assert checks["kernels"]["counts"]["MatMulNBits"] == checks["kernels"]["quantized_layers"] > 0
    written = json.loads((setup[2].model_path.parent / "validation.json").read_text())
    assert written["passed"] is True and written["checks"]["latency"]["ratios"] == checks["latency"]["ratios"]


def test_bad_export_reports_every_failure_and_still_writes(setup, tmp_path):
    _, _, result, reference, float_acc = setup
    wrong = reference[:, ::-1].copy()  # reference logits that disagree everywhere
    report = _validate(
        setup,
        profile=_profile("npu_int8"),
        reference_logits=wrong,
        float_reference_accuracy=float_acc + 50.0,
        report_path=tmp_path / "report.json",
    )
    failures = "\n".join(report.failures)
    for expected in (
        "profile: the model was exported for 'rpi5', validated against 'npu_int8'",
        "ops: opset 21, profile 'npu_int8' says 13",
        "ops: initializer dtype not allowed: bert.encoder.layer.0.attention.self.query.qweight: INT4",
        "fidelity: exact max abs logit difference",
        "accuracy: ",
    ):
        assert expected in failures
    assert json.loads((tmp_path / "report.json").read_text())["passed"] is False
    with pytest.raises(ValidationFailedError) as err:
        report.raise_if_failed()
    assert err.value.exit_code == 3 and err.value.failures == report.failures


def test_fidelity_on_the_references_rows_accuracy_on_every_text(setup):
    """A build computes the torch reference on the first texts only; accuracy still counts every text, in
    both modes."""
    reference = setup[3]
    checks = _validate(setup, reference_logits=reference[:5]).to_dict()["checks"]
    assert checks["fidelity"]["n_samples"] == 5 and checks["fidelity"]["exact"]["max_abs_diff"] <= 1e-4
    assert checks["accuracy"]["n_samples"] == len(TEXTS) > 5
    device = runner.logits(runner.session(setup[2].model_path, runner.Mode.DEVICE), setup[1], TEXTS, DEFAULT_MAX_LENGTH)
    assert checks["accuracy"]["device"] == pytest.approx(100.0 * np.mean(device.argmax(-1) == np.array(LABELS)))
    # a disagreement past the reference's rows is not a fidelity failure; inside them it is
    wrong = reference.copy()
    wrong[5:] = wrong[5:, ::-1]
    assert _validate(setup, reference_logits=wrong[:5]).passed
    assert not _validate(setup, reference_logits=wrong).passed


def test_reference_with_more_rows_than_texts_is_refused(setup):
    reference = setup[3]
    with pytest.raises(ValueError, match=f"must cover 1..{len(TEXTS)} texts"):
        _validate(setup, reference_logits=np.concatenate([reference, reference[:1]]))


def test_evaluator_that_cannot_run_is_a_recorded_skip(setup, monkeypatch):
    class Broken:
        def __init__(self, model):
            raise NotImplementedError("DequantizeLinear for INT2 with block_size")

    monkeypatch.setattr(cross_check_module, "ReferenceEvaluator", Broken)
    report = _validate(setup)
    check = report.to_dict()["checks"]["cross_check"]
    assert report.passed and check["skipped"] is True
    assert "NotImplementedError: DequantizeLinear for INT2 with block_size" in check["reason"]


def test_unreadable_model_fails_with_a_report(setup, tmp_path):
    profile, tok, _, reference, float_acc = setup
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a protobuf")
    report = validate(
        bad,
        profile,
        tokenizer=tok,
        texts=TEXTS,
        labels=LABELS,
        reference_logits=reference,
        float_reference_accuracy=float_acc,
        latency=False,
    )
    assert not report.passed and report.failures[0].startswith("load: could not run:")
    assert json.loads((tmp_path / "validation.json").read_text())["passed"] is False


def test_int8_activations_judged_on_the_weights_only_view(tmp_path):
    """npu_int8: fidelity gates on the graph with activation Q/DQ bypassed; the full graph is reported."""
    model, tok = load_model(tiny_model_dir(tmp_path / "tiny"), CORPUS.label_names)
    npu = _profile("npu_int8")
    cfg = config_from_bits(quantizable_layers(model), 8, scheme=Scheme.SYMMETRIC, containers=npu.weights.container_for)
    qmodel = quantize_model(model, cfg)
    result = export_model(qmodel, tok, npu, cfg, tmp_path / "npu" / "model.onnx", calibration_texts=CORPUS.texts[::2])
    reference = predict_logits(twin_of(qmodel, result), tok, TEXTS).numpy()  # activations in float
    report = validate(
        result.model_path,
        npu,
        tokenizer=tok,
        texts=TEXTS,
        labels=LABELS,
        reference_logits=reference,
        float_reference_accuracy=0.0,
        latency=False,
    )
    checks = report.to_dict()["checks"]
    fidelity = checks["fidelity"]
    assert fidelity["passed"] and fidelity["exact"]["max_abs_diff"] <= 1e-4
    # per block: one pair each on the q/k/v input, the attention output, the FFN input and the FFN output;
    # then the int8 pooler's and classifier's inputs
    assert fidelity["activation_pairs_bypassed"] == 8 + 2
    fake_quant = predict_logits(twin_of(qmodel, result, activations=True), tok, TEXTS).numpy()
    assert fidelity["full_graph_exact"]["max_abs_diff"] >= np.abs(fake_quant - reference).max() / 2 > 0
    # the opset-13 graph is lifted to opset 19 for the reference evaluator, and the lift is recorded
    assert checks["cross_check"]["passed"] and "from opset 13 to 19" in checks["cross_check"]["note"]


def test_a_3_bit_layer_holding_a_4_is_caught_from_the_graph(setup, tmp_path):
    """Validation unpacks the shipped integers: an int4 initializer of a layer the bit config calls 3-bit
    may only hold [-3, 3]; one 4 written into it fails (exit 3), whatever the metadata says."""
    _, _, result, _, _ = setup
    model = onnx.load(str(result.model_path))
    name = "bert.encoder.layer.0.attention.self.query.qweight"
    init = next(i for i in model.graph.initializer if i.name == name)
    values = onnx.numpy_helper.to_array(init).copy()
    values.flat[0] = 4
    init.CopyFrom(onnx.numpy_helper.from_array(values, name))  # still INT4, still the same bytes
    tampered = tmp_path / "model.onnx"
    onnx.save(model, str(tampered))
    report = _validate(setup, model_path=tampered)
    assert any(
        "layer 'bert.encoder.layer.0.attention.self.query': integers span [-3, 4], outside the 3-bit symmetric" in f
        for f in report.failures
    ), report.failures
    with pytest.raises(ValidationFailedError) as err:
        report.raise_if_failed()
    assert err.value.exit_code == 3
