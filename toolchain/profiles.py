"""DeviceProfile: what one edge device can store and run, loaded from a YAML file and validated.

Every problem is reported at once, each naming the file, the field, the bad value and what is allowed:
`device_profiles/rpi5.yaml: weights.bits: 9 is not one of 2, 3, 4, 5, 6, 7, 8`.
"""

from __future__ import annotations

import functools
import reprlib
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import onnx
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from toolchain.errors import BadInputError
from toolchain.quant.containers import Container
from toolchain.quant.core import Scheme, int_range

ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8)
MIN_OPSET, MAX_OPSET = 13, 25  # 13: first per-channel DequantizeLinear; 25: INT2 (docs/onnxruntime.md)
BLOCKED_MIN_OPSET = 21
# Smallest onnxruntime able to run each container / blocked DequantizeLinear on the CPU (docs/onnxruntime.md).
MIN_ORT_FOR_BITS = {8: (1, 16), 4: (1, 19), 2: (1, 24)}
BLOCKED_MIN_ORT = (1, 19)


class OpSet(StrEnum):
    """Named groups of ONNX ops; a profile allows the union of the sets it names plus `extra_ops`, less
    `lacks_ops`."""

    ONNX = "onnx"  # every default-domain op the ONNX standard defines at the profile's opset (standard_ops)
    TRANSFORMER = "transformer"  # what a float BERT-style encoder exports to
    QDQ_WEIGHTS = "qdq_weights"  # DequantizeLinear on integer weights
    QDQ_ACTIVATIONS = "qdq_activations"  # QuantizeLinear/DequantizeLinear pairs on activations
    INT8_DYNAMIC = "int8_dynamic"  # run-time activation quantization feeding integer MatMuls
    PACKED_GATHER = "packed_gather"  # bit fields of gathered 2/3/4-bit embedding rows unpacked with BitShift


OP_SETS: dict[OpSet, frozenset[str]] = {
    OpSet.TRANSFORMER: frozenset(
        "Add Sub Mul Div Pow Sqrt Erf Tanh Neg Reciprocal MatMul Gemm Gather Reshape Transpose Softmax "
        "LayerNormalization ReduceMean Cast Shape Concat Unsqueeze Squeeze Slice Where Equal Expand "
        "Constant ConstantOfShape Identity Range Not Less Greater Min Max Sigmoid Relu Flatten".split()
    ),
    OpSet.QDQ_WEIGHTS: frozenset({"DequantizeLinear"}),
    OpSet.QDQ_ACTIVATIONS: frozenset({"QuantizeLinear", "DequantizeLinear"}),
    OpSet.INT8_DYNAMIC: frozenset({"DynamicQuantizeLinear", "MatMulInteger"}),
    OpSet.PACKED_GATHER: frozenset({"BitShift"}),
}


def op_key(node: onnx.NodeProto) -> str:
    """A node's op as `allowed_ops` names it: the op type, or `domain::OpType` outside the default domain."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


@functools.cache
def standard_ops(opset: int) -> frozenset[str]:
    """Every op of the default ONNX domain defined, and not deprecated, at `opset` (onnx.defs): what a runtime
    implementing the standard runs, as onnxruntime's CPU provider does."""
    out = set()
    for name in {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain == ""}:
        try:
            schema = onnx.defs.get_schema(name, opset, "")
        except onnx.defs.SchemaError:  # introduced after `opset`
            continue
        if not schema.deprecated:
            out.add(name)
    return frozenset(out)


class ActivationQuant(StrEnum):
    """How the device computes a quantized layer (docs/compute-paths.md)."""

    NONE = "none"  # weight-only: integers dequantized, float math
    INT8_STATIC = "int8_static"  # QDQ activations with ranges calibrated on training texts
    INT8_DYNAMIC = "int8_dynamic"  # activations quantized per run (DynamicQuantizeLinear + MatMulInteger)


class TensorQuant(StrEnum):
    """How the head Linears (outside the searched layers) are stored: as trained, or int8 rounded to nearest."""

    FLOAT = "float"
    INT8 = "int8"

    @property
    def bits(self) -> int:
        """Bits per stored weight."""
        return 32 if self is TensorQuant.FLOAT else 8


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EmbeddingQuant(_Strict):
    """Integer embedding tables (docs/embeddings.md): `bits` per entry, one fp16 scale per row or per
    `block_size` entries of a row and, when asymmetric, a `bits`-bit zero point per group. 8 bits: int8
    entries, symmetric, per row; 2, 3 and 4 bits: unsigned bit fields packed in bytes (3 bits in 4-bit
    fields), unpacked after the gather."""

    bits: Literal[2, 3, 4, 8]
    scheme: Scheme = Scheme.SYMMETRIC
    block_size: int | None = Field(default=None, ge=16)

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, v: int | None) -> int | None:
        if v is not None and v & (v - 1):
            raise ValueError(f"{v} is not a power of two >= 16")
        return v

    @model_validator(mode="after")
    def _eight_is_per_row(self) -> EmbeddingQuant:
        if self.bits == 8 and (self.scheme is not Scheme.SYMMETRIC or self.block_size is not None):
            raise ValueError("8-bit tables are int8, symmetric, one scale per row: drop scheme and block_size")
        return self

    @property
    def field_bits(self) -> int:
        """Bits each entry takes in the file: 3-bit entries sit in 4-bit fields."""
        return 4 if self.bits == 3 else self.bits

    def label(self) -> str:
        gran = "per row" if self.block_size is None else f"block {self.block_size}"
        return f"int{self.bits} {self.scheme} {gran}"


def _embedding_shorthand(v: Any) -> Any:
    """`float` keeps the tables as trained; `int8` is `{bits: 8}`."""
    if v == "float":
        return None
    if v == "int8":
        return {"bits": 8}
    return v


class Budget(_Strict):
    max_avg_bits: float | None = Field(
        default=None, gt=0, le=32, allow_inf_nan=False, description="logical bits per weight"
    )
    max_weight_mb: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="container MB of the searched layers' weights"
    )
    max_model_mb: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="model file MB")

    @model_validator(mode="after")
    def _at_least_one(self) -> Budget:
        if self.max_avg_bits is None and self.max_weight_mb is None and self.max_model_mb is None:
            raise ValueError(
                "set at least one of max_avg_bits (logical, whole model), max_model_mb (file) "
                "or max_weight_mb (searched layers' containers)"
            )
        return self


class WeightSpec(_Strict):
    bits: list[int] = Field(min_length=1)
    containers: list[Container] = Field(min_length=1)
    schemes: list[Scheme] = Field(default=[Scheme.SYMMETRIC], min_length=1)
    per_channel: bool = True
    block_sizes: list[int] = []

    @field_validator("bits")
    @classmethod
    def _bits_allowed(cls, v: list[int]) -> list[int]:
        bad = [b for b in v if b not in ALLOWED_BITS]
        if bad:
            raise ValueError(f"{bad[0]} is not one of {', '.join(map(str, ALLOWED_BITS))}")
        return sorted(set(v))

    @field_validator("block_sizes")
    @classmethod
    def _powers_of_two(cls, v: list[int]) -> list[int]:
        bad = [b for b in v if b < 16 or b & (b - 1)]
        if bad:
            raise ValueError(f"{bad[0]} is not a power of two >= 16 (onnxruntime's blocked kernels)")
        return sorted(set(v))

    @model_validator(mode="after")
    def _some_granularity(self) -> WeightSpec:
        if not self.per_channel and not self.block_sizes:
            raise ValueError("per_channel is false and block_sizes is empty: allow at least one granularity")
        return self

    def container_for(self, bits: int, scheme: Scheme) -> Container | None:
        """Smallest allowed container holding `bits`-bit integers of `scheme`, or None."""
        lo, hi = int_range(bits, scheme)
        fits = [c for c in self.containers if c.holds(lo, hi) and c.signed == (scheme is Scheme.SYMMETRIC)]
        return min(fits, key=lambda c: c.bits, default=None)


class OnnxSpec(_Strict):
    opset: int = Field(ge=MIN_OPSET, le=MAX_OPSET)
    min_onnxruntime: str = Field(pattern=r"^\d+\.\d+(\.\d+)?$")
    op_sets: list[OpSet] = [OpSet.TRANSFORMER, OpSet.QDQ_WEIGHTS]
    extra_ops: list[str] = []  # ops the device runs beyond its op sets (`domain::OpType` outside the default domain)
    lacks_ops: list[str] = []  # ops its op sets name that the device's runtime does not run

    @property
    def ort_version(self) -> tuple[int, int]:
        major, minor = self.min_onnxruntime.split(".")[:2]
        return int(major), int(minor)

    def allowed_ops(self) -> frozenset[str]:
        """Allowed op types; ops outside the default domain are written `domain::OpType`."""
        named = [standard_ops(self.opset) if s is OpSet.ONNX else OP_SETS[s] for s in self.op_sets]
        return frozenset().union(*named, self.extra_ops) - set(self.lacks_ops)


class Accuracy(_Strict):
    max_drop: float = Field(ge=0, le=100, description="accuracy points below the float reference")


class DeviceProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)
    description: str
    budget: Budget
    weights: WeightSpec
    onnx: OnnxSpec
    activations: ActivationQuant = ActivationQuant.NONE
    embeddings: EmbeddingQuant | None = None  # every embedding table; None (`float`): as trained
    head: TensorQuant = TensorQuant.FLOAT  # the other Linears (pooler, classifier): int8 per output channel
    # the device may run a separate int8 low-rank adapter branch beside the integer weights: the build then
    # ships merged integers or the branch, whichever scores better (manifest `variant`; toolchain.build.branch)
    adapter_branch: bool = False
    accuracy: Accuracy
    _source: Path | None = PrivateAttr(default=None)  # the file it was loaded from, for messages

    @field_validator("embeddings", mode="before")
    @classmethod
    def _embedding_words(cls, v: Any) -> Any:
        return _embedding_shorthand(v)

    @property
    def where(self) -> str:
        """The profile's file (or its name when built in code): what an error about it should name."""
        return str(self._source) if self._source is not None else f"profile {self.name!r}"

    @model_validator(mode="after")
    def _cross_field(self) -> DeviceProfile:
        problems = _cross_field_problems(self)
        if problems:
            raise ValueError("\n".join(problems))  # one line each, split again by _format_pydantic
        return self

    def containers_needed(self) -> set[Container]:
        return {c for b in self.weights.bits for s in self.weights.schemes if (c := self.weights.container_for(b, s))}

    def granularities(self) -> list[int | None]:
        """Allowed block sizes, None meaning per output channel."""
        return ([None] if self.weights.per_channel else []) + list(self.weights.block_sizes)


def _cross_field_problems(p: DeviceProfile) -> list[str]:
    problems = []
    opset, ort = p.onnx.opset, p.onnx.ort_version
    for c in p.weights.containers:
        if opset < c.min_opset:
            problems.append(
                f"weights.containers: {c} needs onnx.opset >= {c.min_opset}, got {opset} "
                f"(allowed at {opset}: {', '.join(x for x in Container if x.min_opset <= opset)})"
            )
        need = MIN_ORT_FOR_BITS[c.bits]
        if ort < need:
            problems.append(
                f"weights.containers: {c} needs onnx.min_onnxruntime >= {need[0]}.{need[1]}, "
                f"got {p.onnx.min_onnxruntime}"
            )
    if p.weights.block_sizes and opset < BLOCKED_MIN_OPSET:
        problems.append(
            f"weights.block_sizes: {p.weights.block_sizes} needs onnx.opset >= {BLOCKED_MIN_OPSET} "
            f"(blocked DequantizeLinear), got {opset}; use per_channel only"
        )
    if p.weights.block_sizes and ort < BLOCKED_MIN_ORT:
        problems.append(f"weights.block_sizes: needs onnx.min_onnxruntime >= 1.19, got {p.onnx.min_onnxruntime}")
    for b in p.weights.bits:
        if not any(p.weights.container_for(b, s) for s in p.weights.schemes):
            problems.append(
                f"weights.bits: {b} has no container among weights.containers "
                f"[{', '.join(p.weights.containers)}] for schemes [{', '.join(p.weights.schemes)}]"
            )
    if p.activations is ActivationQuant.INT8_STATIC:
        problems += _static_problems(p)
    if p.activations is ActivationQuant.INT8_DYNAMIC:
        problems += _dynamic_problems(p)
    e = p.embeddings
    ops = p.onnx.allowed_ops()
    if e is not None and e.bits < 8 and not OP_SETS[OpSet.PACKED_GATHER] <= ops:
        problems.append(f"embeddings: {e.bits}-bit tables need packed_gather in onnx.op_sets (BitShift unpacks them)")
    if not OP_SETS[OpSet.QDQ_WEIGHTS] <= ops:
        problems.append("onnx.op_sets: qdq_weights is required (integer weights feed DequantizeLinear)")
    return problems


# Signed containers a MatMulInteger can read: int8 directly, int4 and int2 through a Cast to int8 that
# onnxruntime folds into an int8 initializer when it loads the session (docs/compute-paths.md).
DYNAMIC_CONTAINERS = (Container.INT8, Container.INT4, Container.INT2)
WIDENING_ORT = (1, 23)  # the first onnxruntime with a Cast kernel at opset 21 (1.22.1 has none; checked)


def _widening_problems(p: DeviceProfile) -> list[str]:
    """An int8 activation path reads int4 / int2 containers through a widening Cast to int8 (qdq_weights)."""
    sub_byte = [c for c in p.weights.containers if c.bits < 8]
    if not sub_byte or p.onnx.ort_version >= WIDENING_ORT:
        return []
    return [
        f"onnx.min_onnxruntime: activations: {p.activations} widens {', '.join(sub_byte)} to int8 with a "
        f"Cast at opset >= 21, which onnxruntime runs from {'.'.join(map(str, WIDENING_ORT))}; "
        f"got {p.onnx.min_onnxruntime}"
    ]


def _static_problems(p: DeviceProfile) -> list[str]:
    """Static QDQ activations: calibrated Q/DQ pairs; sub-byte weights widened to int8, so symmetric."""
    out = []
    if not OP_SETS[OpSet.QDQ_ACTIVATIONS] <= p.onnx.allowed_ops():
        out.append("activations: int8_static needs qdq_activations in onnx.op_sets")
    out += _widening_problems(p)
    if any(c.bits < 8 for c in p.weights.containers) and p.weights.schemes != [Scheme.SYMMETRIC]:
        out.append(
            "weights.schemes: activations: int8_static with int4 or int2 containers needs [symmetric] "
            "(the widening Cast leaves no room for a narrow zero point)"
        )
    return out


def _dynamic_problems(p: DeviceProfile) -> list[str]:
    """MatMulInteger reads signed integers with one scale per output channel, and nothing else."""
    out = []
    if not OP_SETS[OpSet.INT8_DYNAMIC] <= p.onnx.allowed_ops():
        out.append("activations: int8_dynamic needs int8_dynamic in onnx.op_sets")
    if not set(p.weights.containers) <= set(DYNAMIC_CONTAINERS):
        out.append(
            f"weights.containers: activations: int8_dynamic computes with MatMulInteger, which reads signed "
            f"integers widened to int8; got [{', '.join(p.weights.containers)}], "
            f"allowed: [{', '.join(DYNAMIC_CONTAINERS)}]"
        )
    out += _widening_problems(p)
    if p.weights.schemes != [Scheme.SYMMETRIC]:
        out.append("weights.schemes: activations: int8_dynamic needs [symmetric] (weight zero point 0)")
    if p.weights.block_sizes or not p.weights.per_channel:
        out.append(
            "weights.block_sizes: activations: int8_dynamic needs one scale per output channel: "
            "per_channel: true and no block_sizes"
        )
    if p.adapter_branch:
        out.append("adapter_branch: not supported with activations: int8_dynamic")
    return out


def _short_repr(value: Any) -> str:
    """A bounded repr: YAML aliases can nest a tiny file into an exponentially large value."""
    r = reprlib.Repr()  # keyword arguments need Python 3.12
    r.maxlevel, r.maxstring, r.maxother = 3, 60, 60
    return r.repr(value)[:80]


def _format_pydantic(path: Path, exc: ValidationError) -> list[str]:
    lines = []
    for e in exc.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"] and e["type"] == "value_error":  # cross-field problems each start with their field
            lines += [f"{path}: {m}" for m in msg.splitlines()]
            continue
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        got = "" if e["type"] in {"missing", "value_error"} else f" (got {_short_repr(e.get('input'))})"
        lines.append(f"{path}: {loc}: {msg}{got}")
    return lines


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else []:  # else super() refuses
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may override on purpose
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):  # unhashable keys: SafeLoader reports them
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not UTF-8 text (byte {exc.start}): profiles are UTF-8 YAML") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # safe: no tags that construct Python objects
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise BadInputError(f"{path}: invalid YAML{at}: {getattr(exc, 'problem', None) or exc}") from exc
    except (ValueError, TypeError, AttributeError, OverflowError, IndexError) as exc:  # `!!float abc`, `!!float ''`
        raise BadInputError(f"{path}: invalid YAML: a tagged value cannot be built: {exc}") from exc
    except RecursionError as exc:
        raise BadInputError(f"{path}: invalid YAML: nested too deeply") from exc
    if data is None:
        raise BadInputError(f"{path}: empty file: a profile needs name, description, budget, weights, onnx, accuracy")
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: (top level): expected a mapping of fields, got {type(data).__name__}")
    return data


def load_profile(path: Path | str) -> DeviceProfile:
    """Load and validate one profile; raises BadInputError listing every problem."""
    path = Path(path)
    data = _read_yaml(path)
    try:
        profile = DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise BadInputError(_format_pydantic(path, exc)) from exc
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. huge ints pydantic hands on
        raise BadInputError(f"{path}: (top level): {exc}") from exc
    if profile.name != path.stem:
        raise BadInputError(f"{path}: name: {profile.name!r} must match the file name {path.stem!r}")
    profile._source = path
    return profile


def profile_paths(paths: list[Path | str]) -> list[Path]:
    """Expand directories to their *.yaml / *.yml files (sorted); keep files as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                raise BadInputError(f"{p}: no *.yaml profiles in this directory")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise BadInputError(f"{p}: no such profile file or directory")
    return out


def load_profiles(paths: list[Path | str]) -> list[DeviceProfile]:
    """Load every profile, collecting the problems of all files before raising."""
    profiles, problems, files = [], [], []
    for path in profile_paths(paths):
        try:
            profiles.append(load_profile(path))
            files.append(path)
        except BadInputError as exc:
            problems.extend(exc.problems)
    names = [p.name for p in profiles]
    for path, name in zip(files, names):
        others = [str(f) for f, n in zip(files, names) if n == name and f != path]
        if others:
            problems.append(f"{path}: name: duplicate profile name {name!r} (also in {', '.join(others)})")
    if problems:
        raise BadInputError(problems)
    return profiles


def default_profiles_dir() -> Path:
    """device_profiles/ of the source tree (editable install) or the copy packaged with the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "device_profiles", here / "device_profiles"):
        if candidate.is_dir():
            return candidate
    raise BadInputError("no device_profiles directory found: pass --profiles DIR")


def profiles_or_default(paths: Sequence[Path] | None) -> list[DeviceProfile]:
    """The profiles in `paths` (files or folders), or the bundled ones when none are given."""
    return load_profiles(list(paths) if paths else [default_profiles_dir()])
