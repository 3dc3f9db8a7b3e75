"""Ops and dtypes: every node and initializer of the graph is something the profile's device runs.

- node (domain, op_type): allowed when `profile.onnx.allowed_ops()` holds the op type (default domain) or
  `domain::OpType` (any other domain);
- initializer dtypes: float32, int64 (shapes, axes), int32 and bool constants of at most INDEX_CONSTANT
  elements (index arithmetic: RoBERTa's position ids, a decoder's last-token index), the profile's weight
  containers, int8 for an int8 embedding table, int8 head or an int8 adapter branch (`adapter_branch`),
  uint8 for packed 2/3/4-bit embedding fields, fp16 for embedding scales, uint8/int8 zero points of static
  int8 activations;
- the model's default-domain opset and IR version are the profile's opset and the smallest IR version that
  carries it. Violations are listed by node or initializer name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import onnx
from onnx import TensorProto, helper

from toolchain.profiles import ActivationQuant, DeviceProfile, TensorQuant, op_key
from toolchain.validators.result import result_dict

_DEFAULT_DOMAINS = ("", "ai.onnx")
MAX_LISTED = 20  # violations listed one by one; the rest are counted
INDEX_CONSTANT = 64  # elements: an int32 / bool initializer this small is index arithmetic, not weights
_INDEX_TYPES = {TensorProto.INT32, TensorProto.BOOL}


def allowed_dtypes(profile: DeviceProfile) -> set[int]:
    allowed = {TensorProto.FLOAT, TensorProto.INT64} | {c.onnx_type for c in profile.weights.containers}
    e = profile.embeddings
    if (e is not None and e.bits == 8) or profile.head is TensorQuant.INT8 or profile.adapter_branch:
        allowed.add(TensorProto.INT8)
    if e is not None:
        allowed.add(TensorProto.FLOAT16)  # embedding scales
    if e is not None and e.bits < 8:
        allowed.add(TensorProto.UINT8)  # packed embedding fields and their BitShift amounts
    if profile.activations in (ActivationQuant.INT8_STATIC, ActivationQuant.INT8_DYNAMIC):
        allowed |= {TensorProto.UINT8, TensorProto.INT8}
    return allowed


def _graph_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), None)


@dataclass(frozen=True)
class OpsResult:
    name: str
    opset: int | None
    ir_version: int
    op_counts: dict[str, int]
    op_violations: list[str]  # "node name: domain::Op"
    dtype_violations: list[str]  # "initializer name: DTYPE"
    version_violations: list[str]

    @property
    def failures(self) -> list[str]:
        out = [f"ops: {v}" for v in self.version_violations]
        for kind, items in (
            ("node op not allowed", self.op_violations),
            ("initializer dtype not allowed", self.dtype_violations),
        ):
            out += [f"ops: {kind}: {v}" for v in items[:MAX_LISTED]]
            if len(items) > MAX_LISTED:
                out.append(f"ops: {kind}: ... and {len(items) - MAX_LISTED} more")
        return out

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def _version_violations(model: onnx.ModelProto, profile: DeviceProfile) -> list[str]:
    opset, want = _graph_opset(model), profile.onnx.opset
    out = [] if opset == want else [f"opset {opset}, profile {profile.name!r} says {want}"]
    want_ir = helper.find_min_ir_version_for([helper.make_opsetid("", want)])
    if model.ir_version != want_ir:
        out.append(f"IR version {model.ir_version}, expected {want_ir} for opset {want}")
    return out


def _index_constant(init: onnx.TensorProto) -> bool:
    return init.data_type in _INDEX_TYPES and math.prod(init.dims) <= INDEX_CONSTANT


def check_ops(model: onnx.ModelProto, profile: DeviceProfile) -> OpsResult:
    allowed_ops, dtypes = profile.onnx.allowed_ops(), allowed_dtypes(profile)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[op_key(node)] = counts.get(op_key(node), 0) + 1
    bad_ops = [f"{n.name or '(unnamed)'}: {op_key(n)}" for n in model.graph.node if op_key(n) not in allowed_ops]
    bad_types = [
        f"{i.name}: {TensorProto.DataType.Name(i.data_type)}"
        for i in model.graph.initializer
        if i.data_type not in dtypes and not _index_constant(i)
    ]
    return OpsResult(
        "ops",
        _graph_opset(model),
        model.ir_version,
        dict(sorted(counts.items())),
        bad_ops,
        bad_types,
        _version_violations(model, profile),
    )
