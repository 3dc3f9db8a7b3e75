"""Find where each quantized Linear's weight sits in an exported float graph.

The exporters fold W^T into anonymous initializers, so a layer is located by value: the initializer that
feeds a MatMul (as W^T) or a Gemm (as W with transB=1, W^T otherwise) and equals the layer's dequantized
weight exactly. Node names (`/bert/encoder/layer.0/attention/self/query/MatMul`) are a second opinion: a
value match on a node named for another layer is refused. Every failure is loud: a layer that matches no
site or more than one, and two layers that share one site.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from toolchain.errors import EdgeqError

_WEIGHT_OPS = ("MatMul", "Gemm")


@dataclass(frozen=True)
class WeightSite:
    """One layer's weight in the graph: the consuming node and the float initializer it reads."""

    layer: str
    node: str  # name of the MatMul / Gemm node
    op_type: str
    initializer: str
    transposed: bool  # True: the initializer holds W^T, shape (in, out); False: W, shape (out, in)


def _gemm_trans_b(node: onnx.NodeProto) -> bool:
    return any(a.name == "transB" and a.i == 1 for a in node.attribute)


def _candidates(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, str, bool]]:
    """(node, weight initializer name, transposed) for every MatMul/Gemm whose B input is an initializer."""
    inits = {i.name for i in graph.initializer}
    out = []
    for node in graph.node:
        if node.op_type in _WEIGHT_OPS and len(node.input) > 1 and node.input[1] in inits:
            transposed = not (node.op_type == "Gemm" and _gemm_trans_b(node))
            out.append((node, node.input[1], transposed))
    return out


def _names_layer(node_name: str, layer: str) -> bool:
    """True when the node name's path spells the layer's dotted name, whole components only.

    `/m/bert/encoder/layer.0/attention/self/query/MatMul` names `bert.encoder.layer.0.attention.self.query`.
    """
    return f".{layer}." in node_name.replace("/", ".") + "."


def lift_constants(graph: onnx.GraphProto) -> None:
    """Turn Constant nodes that hold a tensor into initializers, so that every weight is an initializer."""
    keep = []
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and "value" in attrs:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attrs["value"].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _match_layer(layer: str, w: np.ndarray, candidates, arrays: dict[str, np.ndarray]) -> WeightSite:
    expected = {True: w.T, False: w}
    hits = [
        WeightSite(layer, node.name, node.op_type, init, transposed)
        for node, init, transposed in candidates
        if arrays[init].shape == expected[transposed].shape and np.array_equal(arrays[init], expected[transposed])
    ]
    if len(hits) != 1:
        where = ", ".join(f"{h.node} ({h.initializer})" for h in hits)
        found = f"{len(hits)} sites: {where}" if hits else "no MatMul/Gemm weight equals it"
        raise EdgeqError(f"export: layer {layer!r}: expected exactly one weight site in the graph, found {found}")
    site = hits[0]
    named = [node.name for node, _, _ in candidates if _names_layer(node.name, layer)]
    if named and site.node not in named:
        raise EdgeqError(
            f"export: layer {layer!r}: its weight values sit at node {site.node!r}, "
            f"but the node named for it is "
            f"{named[0]!r}; refusing an ambiguous match"
        )
    return site


def locate_weights(graph: onnx.GraphProto, weights: dict[str, np.ndarray]) -> dict[str, WeightSite]:
    """layer -> WeightSite for every (out, in) float32 weight in `weights`, each found exactly once."""
    candidates = _candidates(graph)
    needed = {init for _, init, _ in candidates}
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name in needed}
    sites = {layer: _match_layer(layer, w, candidates, arrays) for layer, w in weights.items()}
    by_init: dict[str, list[str]] = {}
    for site in sites.values():
        by_init.setdefault(site.initializer, []).append(site.layer)
    shared = {k: v for k, v in by_init.items() if len(v) > 1}
    if shared:
        init, layers = next(iter(shared.items()))
        raise EdgeqError(f"export: layers {layers} share one weight initializer {init!r}; cannot quantize them apart")
    consumers = _consumer_counts(graph)
    multi = [s for s in sites.values() if consumers.get(s.initializer, 0) > 1]
    if multi:
        raise EdgeqError(
            f"export: layer {multi[0].layer!r}: its weight initializer {multi[0].initializer!r} feeds "
            f"{consumers[multi[0].initializer]} nodes; expected only {multi[0].node!r}"
        )
    return sites


def _consumer_counts(graph: onnx.GraphProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            counts[name] = counts.get(name, 0) + 1
    return counts
