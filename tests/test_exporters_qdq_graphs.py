"""DequantizeLinear -> MatMul graphs built by the exporter's own helpers, for every container, per channel and
blocked, run in onnxruntime and onnx's ReferenceEvaluator and compared with hand-computed values and with
toolchain.quant.core.dequantize."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from toolchain.exporters.qdq_weights import dq_arrays, dq_node_and_tensors
from toolchain.quant.containers import Container
from toolchain.quant.core import QuantizedWeight, Scheme, dequantize

OPSET = {
    Container.INT8: 21,
    Container.UINT8: 21,
    Container.INT4: 21,
    Container.UINT4: 21,
    Container.INT2: 25,
    Container.UINT2: 25,
}


def _graph(qw: QuantizedWeight, container: Container, transposed: bool) -> onnx.ModelProto:
    """x (2, in) @ DQ(weight) with the weight stored as W^T (MatMul) or W (Gemm transB=1)."""
    out_f, in_f = qw.shape
    dq, tensors = dq_node_and_tensors("w", dq_arrays(qw, transposed), container, "w_float")
    if transposed:
        mm = helper.make_node("MatMul", ["x", "w_float"], ["y"])
    else:
        mm = helper.make_node("Gemm", ["x", "w_float"], ["y"], transB=1)
    graph = helper.make_graph(
        [dq, mm],
        "dq_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, in_f])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, out_f])],
        tensors,
    )
    opset = OPSET[container]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _random_qweight(container: Container, out_f: int, in_f: int, block: int | None, seed: int) -> QuantizedWeight:
    """Integers spanning the whole container range, positive scales, zero points for unsigned containers."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = container.value_range
    n_groups = 1 if block is None else -(-in_f // block)
    q = torch.randint(lo, hi + 1, (out_f, in_f), generator=g, dtype=torch.int16)
    scale = torch.rand(out_f, n_groups, generator=g) + 0.1
    zp = None if container.signed else torch.randint(lo, hi + 1, (out_f, n_groups), generator=g, dtype=torch.int16)
    scheme = Scheme.SYMMETRIC if container.signed else Scheme.ASYMMETRIC
    return QuantizedWeight(q, scale, zp, container.bits, scheme, block)


@pytest.mark.parametrize("container", list(Container))
@pytest.mark.parametrize("block", [None, 16])
@pytest.mark.parametrize("transposed", [True, False], ids=["matmul", "gemm_transB"])
def test_dq_matmul_matches_core_dequantize(container, block, transposed):
    # in_features 40 with block 16: a ragged last block of 8; odd out_features exercise packing tails
    qw = _random_qweight(container, out_f=5, in_f=40, block=block, seed=7)
    model = _graph(qw, container, transposed)
    x = np.random.default_rng(0).standard_normal((2, 40)).astype(np.float32)
    expected = x @ dequantize(qw.q, qw.scale, qw.zero_point, block).numpy().T
    np.testing.assert_allclose(_run_ort(model, x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ReferenceEvaluator(model).run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("container", list(Container))
@pytest.mark.parametrize("block", [None, 16])
def test_stored_integers_dequantize_exactly(container, block):
    """With x = identity rows the graph outputs the dequantized weight: core.dequantize's, bit for bit."""
    qw = _random_qweight(container, out_f=6, in_f=32, block=block, seed=3)
    model = _graph(qw, container, transposed=True)
    eye = np.eye(32, dtype=np.float32)[:2]  # rows 0 and 1 of W^T
    got = _run_ort(model, eye)
    w_t = dequantize(qw.q, qw.scale, qw.zero_point, block).numpy().T
    assert np.array_equal(got, w_t[:2])
    assert np.array_equal(dq_arrays(qw, True).dequantize(), w_t)


def test_hand_computed_int4_per_channel():
    # W (2 out, 2 in) = [[1, -2], [7, -8]] * scale per row [0.5, 0.25]  ->  [[0.5, -1.0], [1.75, -2.0]]
    q = torch.tensor([[1, -2], [7, -8]], dtype=torch.int16)
    qw = QuantizedWeight(q, torch.tensor([[0.5], [0.25]]), None, 4, Scheme.SYMMETRIC, None)
    model = _graph(qw, Container.INT4, transposed=True)
    stored = {t.name: t for t in model.graph.initializer}["w.qweight"]
    # stored as W^T = [[1, 7], [-2, -8]], packed LSB-first:
    # byte0 = (7 << 4) | 1, byte1 = (-8 & 15) << 4 | (-2 & 15)
    assert stored.data_type == TensorProto.INT4 and list(stored.dims) == [2, 2]
    assert stored.raw_data == bytes([0x71, 0x8E])
    x = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(_run_ort(model, x), np.array([[0.5, 1.75], [-1.0, -2.0]], dtype=np.float32))


def test_hand_computed_uint2_blocked_with_zero_point():
    # one output row, 4 inputs in 2 blocks of 2: q = [3, 0 | 1, 2], zero points [1 | 2], scales [0.5 | 2.0]
    # w = [(3-1)*0.5, (0-1)*0.5, (1-2)*2, (2-2)*2] = [1.0, -0.5, -2.0, 0.0]
    q = torch.tensor([[3, 0, 1, 2]], dtype=torch.int16)
    qw = QuantizedWeight(
        q, torch.tensor([[0.5, 2.0]]), torch.tensor([[1, 2]], dtype=torch.int16), 2, Scheme.ASYMMETRIC, 2
    )
    model = _graph(qw, Container.UINT2, transposed=True)
    x = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(_run_ort(model, x), np.array([[-1.5], [1.0]], dtype=np.float32))
    np.testing.assert_array_equal(
        ReferenceEvaluator(model).run(None, {"x": x})[0], np.array([[-1.5], [1.0]], np.float32)
    )


def test_blocked_layout_is_matmulnbits_friendly():
    """W^T blocked along the input axis: DequantizeLinear(axis=0, block_size=B), scales (G, out)."""
    qw = _random_qweight(Container.INT4, out_f=8, in_f=64, block=32, seed=1)
    arrays = dq_arrays(qw, transposed=True)
    assert (arrays.axis, arrays.block_size, arrays.ints.shape, arrays.scale.shape) == (0, 32, (64, 8), (2, 8))
    per_channel = dq_arrays(_random_qweight(Container.INT8, 8, 64, None, 1), transposed=True)
    assert (per_channel.axis, per_channel.block_size, per_channel.scale.shape) == (1, None, (8,))
