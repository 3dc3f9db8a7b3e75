"""Integer weight initializers + DequantizeLinear, replacing each quantized layer's float weight.

Layout, for a weight W (out, in) quantized in groups along `in` (toolchain.quant.core):

| consumer                       | stored integers | granularity  | DequantizeLinear    | scale shape   |
|--------------------------------|-----------------|--------------|---------------------|---------------|
| MatMul, Gemm transB=0 (x @ W^T) | q^T (in, out)   | per channel  | axis=1              | (out,)        |
|                                |                 | block B      | axis=0, block_size=B| (G, out)      |
| Gemm transB=1 (x @ W^T via W)   | q (out, in)     | per channel  | axis=0              | (out,)        |
|                                |                 | block B      | axis=1, block_size=B| (out, G)      |

The (in, out) blocked layout is the one onnxruntime fuses into MatMulNBits. Integers are packed into the
layer's container (LSB-first, row-major: toolchain.quant.containers.pack) and stored as raw_data; scales are
fp32; zero points (asymmetric only) use the same container type. No zero point means zero point 0.

With `widen` (the int8 activation paths), a layer in an int4 or int2 container reads its integers through
`Cast(to=INT8)`: the Cast has only an initializer for input, so onnxruntime's constant folding turns it into
an int8 initializer when the session loads, and the integer kernels (which read int8) fuse as for an int8
layer. The file keeps the packed integers; memory holds 8 bits per weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from toolchain.errors import EdgeqError
from toolchain.exporters.weight_sites import WeightSite
from toolchain.quant.containers import Container, pack
from toolchain.quant.core import QuantizedWeight


@dataclass(frozen=True)
class DqArrays:
    """What one DequantizeLinear reads: integers, scales, optional zero points, axis and block size."""

    ints: np.ndarray  # int64, the stored orientation
    scale: np.ndarray  # float32
    zero_point: np.ndarray | None  # int64, same shape as scale
    axis: int
    block_size: int | None

    def dequantize(self) -> np.ndarray:
        """ONNX DequantizeLinear semantics in numpy: (ints - zero_point) * scale, float32."""
        centred = self.ints if self.zero_point is None else self.ints - self._expand(self.zero_point)
        return (centred.astype(np.float32) * self._expand(self.scale)).astype(np.float32)

    def _expand(self, v: np.ndarray) -> np.ndarray:
        """Per-axis (1-D) or per-block (same rank) values broadcast to the integers' shape."""
        if self.block_size is None:
            shape = [1] * self.ints.ndim
            shape[self.axis] = -1
            return v.reshape(shape)
        n = self.ints.shape[self.axis]
        return np.repeat(v, self.block_size, axis=self.axis).take(np.arange(n), axis=self.axis)


def dq_arrays(qw: QuantizedWeight, transposed: bool) -> DqArrays:
    """Arrange a QuantizedWeight for a consumer that reads W^T (`transposed`) or W (see the module table)."""
    q = qw.q.numpy().astype(np.int64)  # (out, in)
    scale = qw.scale.numpy().astype(np.float32)  # (out, G)
    zp = None if qw.zero_point is None else qw.zero_point.numpy().astype(np.int64)
    if qw.block_size is None:
        axis = 1 if transposed else 0
        return DqArrays(q.T if transposed else q, scale[:, 0], None if zp is None else zp[:, 0], axis, None)
    if transposed:
        return DqArrays(q.T, scale.T.copy(), None if zp is None else zp.T.copy(), 0, qw.block_size)
    return DqArrays(q, scale, zp, 1, qw.block_size)


def int_tensor(name: str, values: np.ndarray, container: Container) -> TensorProto:
    """An integer initializer of `container`'s ONNX type, packed into raw_data."""
    return helper.make_tensor(
        name, container.onnx_type, list(values.shape), pack(values, container).tobytes(), raw=True
    )


def float_tensor(name: str, values: np.ndarray) -> TensorProto:
    return helper.make_tensor(
        name, TensorProto.FLOAT, list(values.shape), values.astype(np.float32).tobytes(), raw=True
    )


def dq_node_and_tensors(
    prefix: str, arrays: DqArrays, container: Container, output: str
) -> tuple[onnx.NodeProto, list[TensorProto]]:
    """The DequantizeLinear node writing `output` and the initializers it reads."""
    tensors = [
        int_tensor(f"{prefix}.qweight", arrays.ints, container),
        float_tensor(f"{prefix}.scale", arrays.scale),
    ]
    if arrays.zero_point is not None:
        tensors.append(int_tensor(f"{prefix}.zero_point", arrays.zero_point, container))
    attrs = {"axis": arrays.axis} | ({} if arrays.block_size is None else {"block_size": arrays.block_size})
    node = helper.make_node(
        "DequantizeLinear", [t.name for t in tensors], [output], name=f"{prefix}/DequantizeLinear", **attrs
    )
    return node, tensors


def widening_cast(qweight: str, layer: str) -> onnx.NodeProto:
    """Cast(to=INT8) of a sub-byte integer initializer, writing `<qweight>.int8` (folded at session load)."""
    return helper.make_node("Cast", [qweight], [f"{qweight}.int8"], name=f"{layer}/Widen", to=TensorProto.INT8)


def rewrite_weights(
    model: onnx.ModelProto,
    sites: dict[str, WeightSite],
    weights: dict[str, QuantizedWeight],
    containers: dict[str, Container],
    *,
    widen: bool = False,
) -> dict[str, list[str]]:
    """Replace every located float weight by integers + DequantizeLinear; layer -> its initializer names.

    Before touching the graph, checks that the integers dequantize to exactly the float weight they replace:
    the ONNX model then computes with the same weights as the torch model it came from. `widen`: sub-byte
    containers reach their DequantizeLinear through a widening Cast to int8 (module docstring).
    """
    graph = model.graph
    floats = {i.name: i for i in graph.initializer}
    new_nodes, new_tensors, names = [], [], {}
    for layer, site in sites.items():
        arrays = dq_arrays(weights[layer], site.transposed)
        _check_exact(layer, arrays, floats[site.initializer])
        node, tensors = dq_node_and_tensors(layer, arrays, containers[layer], site.initializer)
        if widen and containers[layer].bits < 8:
            if arrays.zero_point is not None:  # the zero point would stay in the narrow type: profiles refuse it
                raise EdgeqError(f"export: layer {layer!r}: a widened {containers[layer]} layer must be symmetric")
            cast = widening_cast(node.input[0], layer)
            node.input[0] = cast.output[0]
            new_nodes.append(cast)
        new_nodes.append(node)
        new_tensors.extend(tensors)
        names[layer] = [t.name for t in tensors]
    replaced = {s.initializer for s in sites.values()}
    kept = [i for i in graph.initializer if i.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_tensors)
    nodes = new_nodes + list(graph.node)  # initializer-only inputs: topological order holds
    del graph.node[:]
    graph.node.extend(nodes)
    return names


def _check_exact(layer: str, arrays: DqArrays, replaced: TensorProto) -> None:
    expected = onnx.numpy_helper.to_array(replaced)
    got = arrays.dequantize()
    if got.shape != expected.shape or not np.array_equal(got, expected):
        raise EdgeqError(
            f"export: layer {layer!r}: the integers do not dequantize to the float weight they replace "
            f"(shape {got.shape} vs {expected.shape}); the model's QuantLinear and its qweight disagree"
        )
