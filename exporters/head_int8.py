"""int8 head: the Linears outside the searched layers (pooler, pre-classifier, classifier) as integers.

These layers are trained in float and not part of any bit configuration; a profile with `head: int8` stores
each one symmetric per output channel at 8 bits, rounded to nearest (`head_weights`), written and located in
the graph like a searched layer. The torch twin applies the same function to the same float weights.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from torch import nn

from toolchain.exporters.weight_sites import WeightSite
from toolchain.profiles import TensorQuant
from toolchain.quant.core import QuantizedWeight, Scheme, quantize_rtn

HEAD_BITS = TensorQuant.INT8.bits


def head_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """Every plain nn.Linear of the model: searched layers are QuantLinear by the time it is exported."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def head_weights(model: nn.Module) -> dict[str, QuantizedWeight]:
    return {
        name: quantize_rtn(m.weight.detach().float(), HEAD_BITS, Scheme.SYMMETRIC, None)
        for name, m in head_layers(model).items()
    }


def round_head_in_graph(graph: onnx.GraphProto, sites: dict[str, WeightSite], head: dict[str, QuantizedWeight]) -> None:
    """Overwrite each head layer's float initializer with its rounded weight, so the integers that replace
    it next (qdq_weights.rewrite_weights) dequantize to exactly the values the graph computed with."""
    inits = {i.name: i for i in graph.initializer}
    for layer, qw in head.items():
        site = sites[layer]
        w = qw.dequantize().numpy().astype(np.float32)
        inits[site.initializer].CopyFrom(numpy_helper.from_array(w.T if site.transposed else w, site.initializer))
