"""Locating each quantized layer's weight in a float graph: by exact value, confirmed by node name, loud on
anything ambiguous."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolchain.errors import EdgeqError
from toolchain.exporters.weight_sites import lift_constants, locate_weights

RNG = np.random.default_rng(0)
W_Q = RNG.standard_normal((4, 3)).astype(np.float32)  # (out, in) of layer "enc.q"
W_K = RNG.standard_normal((4, 3)).astype(np.float32)


def _graph(nodes, inits) -> onnx.GraphProto:
    return helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None) for n in nodes[-1:]],
        [numpy_helper.from_array(a, name) for name, a in inits.items()],
    )


def test_matmul_and_gemm_sites_found_with_orientation():
    nodes = [
        helper.make_node("MatMul", ["x", "anon_0"], ["q"], name="/enc/q/MatMul"),
        helper.make_node("Gemm", ["x", "anon_1"], ["k"], name="/enc/k/Gemm", transB=1),
    ]
    graph = _graph(nodes, {"anon_0": W_Q.T.copy(), "anon_1": W_K})
    sites = locate_weights(graph, {"enc.q": W_Q, "enc.k": W_K})
    assert (sites["enc.q"].initializer, sites["enc.q"].transposed, sites["enc.q"].node) == (
        "anon_0",
        True,
        "/enc/q/MatMul",
    )
    assert (sites["enc.k"].initializer, sites["enc.k"].transposed, sites["enc.k"].op_type) == (
        "anon_1",
        False,
        "Gemm",
    )


def test_missing_weight_is_refused():
    graph = _graph([helper.make_node("MatMul", ["x", "a"], ["y"], name="/enc/q/MatMul")], {"a": W_K.T.copy()})
    with pytest.raises(EdgeqError, match="'enc.q'.*no MatMul/Gemm weight equals it"):
        locate_weights(graph, {"enc.q": W_Q})


def test_value_off_by_one_ulp_is_not_a_match():
    near = np.nextafter(W_Q.T, np.inf).astype(np.float32)
    graph = _graph([helper.make_node("MatMul", ["x", "a"], ["y"], name="/enc/q/MatMul")], {"a": near})
    with pytest.raises(EdgeqError, match="no MatMul/Gemm weight"):
        locate_weights(graph, {"enc.q": W_Q})


def test_two_sites_with_the_same_values_are_refused():
    nodes = [
        helper.make_node("MatMul", ["x", "a"], ["y1"], name="/enc/q/MatMul"),
        helper.make_node("MatMul", ["x", "b"], ["y2"], name="/other/MatMul"),
    ]
    graph = _graph(nodes, {"a": W_Q.T.copy(), "b": W_Q.T.copy()})
    with pytest.raises(EdgeqError, match="found 2 sites"):
        locate_weights(graph, {"enc.q": W_Q})


def test_value_match_on_a_node_named_for_another_layer_is_refused():
    nodes = [
        helper.make_node("MatMul", ["x", "a"], ["y1"], name="/enc/q/MatMul"),
        helper.make_node("MatMul", ["x", "b"], ["y2"], name="/enc/k/MatMul"),
    ]
    graph = _graph(nodes, {"a": W_K.T.copy(), "b": W_Q.T.copy()})  # values swapped against the names
    with pytest.raises(EdgeqError, match="node named for it is '/enc/q/MatMul'"):
        locate_weights(graph, {"enc.q": W_Q})


def test_shared_initializer_is_refused():
    nodes = [
        helper.make_node("MatMul", ["x", "a"], ["y1"], name="/enc/q/MatMul"),
        helper.make_node("MatMul", ["x", "a"], ["y2"], name="/enc/k/MatMul"),
    ]
    graph = _graph(nodes, {"a": W_Q.T.copy()})
    with pytest.raises(EdgeqError, match="2 sites"):
        locate_weights(graph, {"enc.q": W_Q})


def test_layer_index_in_name_does_not_match_a_longer_index():
    # layer.1 must not claim /layer.11/ nodes: the name check compares whole dotted components
    nodes = [
        helper.make_node("MatMul", ["x", "a"], ["y"], name="/enc/layer.11/q/MatMul"),
        helper.make_node("MatMul", ["x", "b"], ["y2"], name="/enc/layer.1/q/MatMul"),
    ]
    graph = _graph(nodes, {"a": W_K.T.copy(), "b": W_Q.T.copy()})
    assert locate_weights(graph, {"enc.layer.1.q": W_Q})["enc.layer.1.q"].initializer == "b"


def test_constant_nodes_become_initializers():
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(W_Q.T.copy()))
    graph = _graph([const, helper.make_node("MatMul", ["x", "c"], ["y"], name="/enc/q/MatMul")], {})
    lift_constants(graph)
    assert [n.op_type for n in graph.node] == ["MatMul"]
    assert locate_weights(graph, {"enc.q": W_Q})["enc.q"].initializer == "c"
