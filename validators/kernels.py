"""Kernels: which matrix-multiply kernels onnxruntime actually runs, read from its optimized graph.

A profile names its device's compute path (`activations`); onnxruntime's default optimizations decide the
kernels. This check saves the optimized graph (`SessionOptions.optimized_model_filepath`), counts its
matrix-multiply nodes by type, and flags a package whose quantized layers do not all land on a kernel of the
requested path. Seen on onnxruntime 1.31 CPU (docs/compute-paths.md):

| activations  | graph written                               | kernel after optimization            |
|--------------|---------------------------------------------|--------------------------------------|
| none         | DequantizeLinear -> MatMul                  | MatMulNBits (int8 activations inside) |
| int8_static  | QuantizeLinear/DequantizeLinear -> MatMul   | MatMulIntegerToFloat                 |
| int8_dynamic | DynamicQuantizeLinear -> MatMulInteger      | DynamicQuantizeMatMul, MatMulIntegerToFloat |

The attention products (QK^T, AV) stay float MatMul / FusedMatMul on every path. A flag is reported, not a
failure: the package still computes what it claims, only not with the kernels its profile asked for.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from toolchain.profiles import ActivationQuant
from toolchain.validators import runner
from toolchain.validators.result import result_dict

MATMUL_KERNELS = (
    "MatMulNBits",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "MatMulInteger",
    "QLinearMatMul",
    "QGemm",
    "MatMul",
    "FusedMatMul",
    "Gemm",
    "FusedGemm",
)
EXPECTED: dict[ActivationQuant, tuple[str, ...]] = {
    ActivationQuant.NONE: ("MatMulNBits",),
    ActivationQuant.INT8_STATIC: ("MatMulIntegerToFloat", "QLinearMatMul", "QGemm", "DynamicQuantizeMatMul"),
    ActivationQuant.INT8_DYNAMIC: ("DynamicQuantizeMatMul", "MatMulIntegerToFloat"),
}


@dataclass(frozen=True)
class KernelResult:
    name: str
    compute_path: str  # the profile's `activations`
    expected_kernels: list[str]
    counts: dict[str, int]  # matrix-multiply node type -> count in onnxruntime's optimized graph
    quantized_layers: int  # layers with integer weights (searched layers, branch factors, int8 head)
    onnxruntime: str
    # initializer bytes of the optimized graph: what the session holds for weights once it has folded
    # constants (e.g. an int8 head dequantized to float), before kernel-specific prepacking
    runtime_weight_bytes: int = 0

    @property
    def on_path(self) -> int:
        return sum(self.counts.get(k, 0) for k in self.expected_kernels)

    @property
    def flag(self) -> str | None:
        """Why the requested path was not (fully) taken; None when every quantized layer is on it."""
        if self.on_path >= self.quantized_layers:
            return None
        return (
            f"kernels: {self.compute_path} asks for {' / '.join(self.expected_kernels)}, but onnxruntime "
            f"{self.onnxruntime} runs {self.on_path} such nodes for {self.quantized_layers} quantized layers "
            f"(matrix-multiply nodes: {self.counts})"
        )

    @property
    def failures(self) -> list[str]:
        return []  # reported and flagged, not judged

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self) | {"on_path": self.on_path, "flag": self.flag}


def layers_on_path(md, activations: ActivationQuant) -> int:
    """Quantized layers the path's kernels must run: every stored layer, and an int8 head (pooler,
    classifier) on the dynamic path only; on the weight-only and static paths onnxruntime computes the
    head's Gemm in float from its dequantized int8 weights."""
    head = md.head_tensors if activations is ActivationQuant.INT8_DYNAMIC else {}
    return len(md.bit_config.stored_layers()) + len(head)


@dataclass(frozen=True)
class OptimizedGraph:
    """The graph onnxruntime runs (default optimizations, CPU provider), in two numbers."""

    op_counts: Counter  # node type -> count
    initializer_bytes: int


def optimized_graph(model_path: Path, threads: int = runner.THREADS) -> OptimizedGraph:
    from toolchain.validators.size import tensor_nbytes

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.log_severity_level = 3  # "hardware specific optimizations" warning: expected, we only count
        opts.optimized_model_filepath = str(out)
        ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(out), load_external_data=False).graph
        return OptimizedGraph(Counter(n.op_type for n in graph.node), sum(tensor_nbytes(t) for t in graph.initializer))


def check_kernels(model_path: Path, compute_path: ActivationQuant, quantized_layers: int) -> KernelResult:
    g = optimized_graph(model_path)
    return KernelResult(
        "kernels",
        str(compute_path),
        list(EXPECTED[compute_path]),
        {k: g.op_counts[k] for k in MATMUL_KERNELS if g.op_counts[k]},
        quantized_layers,
        ort.__version__,
        g.initializer_bytes,
    )
