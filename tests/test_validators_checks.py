"""The validation checks as pure functions: hand-computed logits, accuracies, graphs and tensor sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from toolchain.bitconfig import BitConfig, LayerBits
from toolchain.exporters.metadata import ExportMetadata
from toolchain.profiles import default_profiles_dir, load_profile
from toolchain.quant.containers import Container
from toolchain.validators.accuracy import check_accuracy
from toolchain.validators.fidelity import check_fidelity, compare
from toolchain.validators.ops import check_ops
from toolchain.validators.result import CheckError, CheckSkipped, ValidationReport
from toolchain.validators.size import check_size, tensor_nbytes


def _profile(name):
    return load_profile(default_profiles_dir() / f"{name}.yaml")


def test_compare_max_diff_and_agreement():
    logits = np.array([[1.0, 2.0], [3.0, 1.0]], np.float32)
    ref = np.array([[1.0, 2.5], [1.0, 3.0]], np.float32)
    got = compare(logits, ref)
    assert got.max_abs_diff == 2.0 and got.top1_agreement == 50.0
    with pytest.raises(ValueError, match="shape"):
        compare(logits, ref[:1])


def test_fidelity_fails_on_tolerance_and_agreement_only_in_exact_mode():
    ref = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    ok = check_fidelity(ref + 5e-5, ref[:, ::-1].copy(), ref, tolerance=1e-4)
    assert ok.failures == [] and ok.device.top1_agreement == 0.0  # device mode is reported, not judged
    bad = check_fidelity(ref[:, ::-1].copy(), None, ref, tolerance=1e-4)
    assert bad.failures == [
        "fidelity: exact max abs logit difference 1 > 0.0001",
        "fidelity: exact top-1 agreement 0.00 % < 100 %",
    ]
    assert json.dumps(bad.to_dict())  # JSON-serialisable


def test_accuracy_drop_is_judged_on_the_lower_of_the_two_modes():
    labels = [0, 1, 1, 0, 1, 0]
    exact = np.array([[1, 0], [0, 1], [0, 1], [1, 0], [1, 0], [1, 0]], np.float32)  # 5 of 6 right
    device = exact.copy()
    device[2] = [1, 0]  # default optimizations flip one more text: 4 of 6
    res = check_accuracy(exact, device, labels, float_reference=100.0, max_drop=30.0)
    assert res.n_samples == 6 and res.exact == pytest.approx(500 / 6) and res.device == pytest.approx(400 / 6)
    assert res.drop == pytest.approx(200 / 6)
    assert res.failures == [
        "accuracy: 33.33 points below the float reference 100.00 % on 6 texts (optimizations off 83.33 %, "
        "default optimizations 66.67 %); the profile allows 30"
    ]
    assert check_accuracy(exact, device, labels, 100.0, 34.0).failures == []
    assert json.dumps(res.to_dict())


def test_accuracy_gained_by_default_optimizations_is_not_credited():
    labels = [0, 1]
    exact = np.array([[1, 0], [1, 0]], np.float32)  # 50 %
    device = np.array([[1, 0], [0, 1]], np.float32)  # 100 %
    res = check_accuracy(exact, device, labels, float_reference=100.0, max_drop=10.0)
    assert res.device == 100.0 and res.drop == 50.0


def test_accuracy_without_a_device_run_is_judged_on_exact_mode():
    res = check_accuracy(np.array([[1, 0], [1, 0]], np.float32), None, [0, 1], 100.0, 10.0)
    assert res.device is None and res.drop == 50.0
    assert "default optimizations not run" in res.failures[0]


def test_accuracy_refuses_device_rows_that_are_not_every_text():
    with pytest.raises(ValueError, match="3 default-optimization rows for 2 texts"):
        check_accuracy(np.zeros((2, 2)), np.zeros((3, 2)), [0, 1], 100.0, 1.0)
    with pytest.raises(ValueError, match="1 default-optimization rows for 2 texts"):
        check_accuracy(np.zeros((2, 2)), np.zeros((1, 2)), [0, 1], 100.0, 1.0)


def _model(nodes, inits, opset=21):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    return model


def test_ops_violations_listed_by_node_name():
    nodes = [
        helper.make_node(
            "MatMulNBits",
            ["x", "w"],
            ["a"],
            name="fused_mm",
            domain="com.microsoft",
            K=4,
            N=4,
            bits=4,
            block_size=16,
        ),
        helper.make_node("Relu", ["a"], ["y"], name="relu"),
    ]
    inits = [
        helper.make_tensor("w", TensorProto.UINT8, [4, 1, 8], bytes(32), raw=True),
        numpy_helper.from_array(np.zeros(4, np.float16), "half"),
    ]
    float_tables = _profile("rpi5").model_copy(update={"embeddings": None})  # no packed, fp16-scaled tables
    res = check_ops(_model(nodes, inits), float_tables)
    assert res.op_violations == ["fused_mm: com.microsoft::MatMulNBits"]  # Relu is in the transformer op set
    assert res.dtype_violations == ["w: UINT8", "half: FLOAT16"]  # rpi5 containers: int4, int8
    assert res.op_counts == {"Relu": 1, "com.microsoft::MatMulNBits": 1}
    rpi5 = _profile("rpi5")
    extra = rpi5.model_copy(update={"onnx": rpi5.onnx.model_copy(update={"extra_ops": ["com.microsoft::MatMulNBits"]})})
    assert check_ops(_model(nodes, inits), extra).op_violations == []


def test_small_int32_constants_are_index_arithmetic_and_large_ones_are_refused():
    inits = [
        numpy_helper.from_array(np.arange(3, dtype=np.int32), "offsets"),  # RoBERTa's position-id arithmetic
        numpy_helper.from_array(np.zeros((16, 16), np.int32), "int32_weight"),  # 256 elements: not an index
        numpy_helper.from_array(np.ones(2, bool), "flags"),
    ]
    res = check_ops(_model([helper.make_node("Relu", ["x"], ["y"], name="r")], inits), _profile("npu_int8"))
    assert res.dtype_violations == ["int32_weight: INT32"]


def test_the_onnx_op_set_is_the_standard_at_the_profiles_opset_less_what_the_device_lacks():
    from toolchain.profiles import standard_ops

    assert {"CumSum", "Cos", "Sin", "ArgMax", "Trilu", "DequantizeLinear", "BitShift"} <= standard_ops(21)
    assert "Trilu" not in standard_ops(13) and "Upsample" not in standard_ops(21)  # 14+; deprecated at 10
    rpi5 = _profile("rpi5")
    assert rpi5.onnx.op_sets == ["onnx"] and rpi5.onnx.allowed_ops() == standard_ops(21)
    lacking = rpi5.onnx.model_copy(update={"lacks_ops": ["CumSum"]})
    assert lacking.allowed_ops() == standard_ops(21) - {"CumSum"}
    nodes = [helper.make_node("CumSum", ["x", "axis"], ["y"], name="positions")]
    assert check_ops(_model(nodes, []), rpi5).op_violations == []
    npu = _profile("npu_int8")
    assert check_ops(_model(nodes, []), npu).op_violations == ["positions: CumSum"]


def test_ops_opset_and_ir_version_must_be_the_profiles():
    res = check_ops(_model([helper.make_node("Relu", ["x"], ["y"], name="r")], []), _profile("npu_int8"))
    assert res.version_violations == [
        "opset 21, profile 'npu_int8' says 13",
        "IR version 10, expected 7 for opset 13",
    ]


def test_tensor_nbytes_packed_raw_and_external():
    int4 = helper.make_tensor("a", TensorProto.INT4, [3, 3], bytes(5), raw=True)
    assert tensor_nbytes(int4) == 5
    typed = helper.make_tensor("b", TensorProto.FLOAT, [2, 3], [0.0] * 6)
    assert tensor_nbytes(typed) == 24
    ext = helper.make_tensor("c", TensorProto.INT2, [10, 10], bytes(25), raw=True)
    set_external_data(ext, location="model.onnx.data", offset=0, length=25)
    ext.ClearField("raw_data")
    ext.data_location = TensorProto.EXTERNAL
    assert tensor_nbytes(ext) == 25


def test_size_counts_graph_bytes_against_config_and_budget(tmp_path):
    lb = LayerBits(bits=4, container=Container.INT4, out_features=4, in_features=8)  # 16 B ints + 16 B scales
    cfg = BitConfig(layers={"l": lb})
    inits = [
        helper.make_tensor("l.qweight", TensorProto.INT4, [8, 4], bytes(16), raw=True),
        numpy_helper.from_array(np.ones(4, np.float32), "l.scale"),
    ]
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], inits)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    md = ExportMetadata(profile="rpi5", bit_config=cfg, layer_tensors={"l": ["l.qweight", "l.scale"]})
    res = check_size(path, model, md, _profile("rpi5"))
    assert (res.weight_container_bytes, res.expected_container_bytes, res.file_bytes) == (
        32,
        32,
        path.stat().st_size,
    )
    assert res.logical_bits_per_weight == 8.0  # 4 bits + a 32-bit scale per 8 weights
    assert res.n_params == 32 and res.bits_per_param == 8.0  # the scales are the layer's, not parameters
    assert res.failures == ["size: 8.000 logical bits per parameter of the whole model > budget.max_avg_bits 4.5"]
    md_bad = ExportMetadata(profile="rpi5", bit_config=cfg, layer_tensors={"l": ["l.scale"]})
    assert (
        "size: layer 'l': 16 bytes in the graph, the bit config says 32"
        in check_size(path, model, md_bad, _profile("rpi5")).failures
    )


def test_report_collects_every_failure_and_writes_json(tmp_path):
    report = ValidationReport(
        "m.onnx",
        "rpi5",
        {"onnxruntime": "x"},
        {
            "load": CheckError("load", "OSError: gone"),
            "cross_check": CheckSkipped("cross_check", "evaluator cannot run INT2"),
        },
    )
    assert not report.passed and report.failures == ["load: could not run: OSError: gone"]
    report.to_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] is False and data["checks"]["cross_check"]["skipped"] is True
    assert data["checks"]["cross_check"]["reason"] == "evaluator cannot run INT2"
