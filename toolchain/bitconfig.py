"""BitConfig: the per-layer quantization a search produces and merge, export and reports consume.

Two costs are kept apart (docs/design.md, Budgets):
- logical bits per weight: what the configuration chooses, b + overhead / group size, where the overhead of
  a group is its fp32 scale (32 bits) plus, for asymmetric groups, a b-bit zero point;
- container bytes: what the device stores, the same with b replaced by the container's width, and each
  packed tensor rounded up to whole bytes.

A configuration may carry an int8 low-rank adapter branch beside every layer (`branch_rank`): its two
factors per layer are stored like any other quantized Linear (int8 symmetric, one fp32 scale per row), and
their bits and bytes count in both costs. Bits per weight stay per weight of the model's own layers.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from toolchain.errors import BadInputError
from toolchain.quant.containers import Container
from toolchain.quant.core import Scheme, int_range

SCALE_BITS = 32  # fp32 scales: fp16 breaks onnxruntime's MatMulNBits fusion (docs/onnxruntime.md)
BRANCH_BITS = 8  # the adapter branch's factors: int8, symmetric, one scale per row
BRANCH_DOWN, BRANCH_UP = ".branch.down", ".branch.up"  # a layer's branch factors: module name suffixes


class LayerBits(BaseModel):
    """How one Linear layer is quantized and what it costs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bits: int = Field(ge=2, le=8)
    scheme: Scheme = Scheme.SYMMETRIC
    block_size: int | None = Field(default=None, ge=2, description="None: one group per output channel")
    container: Container
    out_features: int = Field(ge=1)
    in_features: int = Field(ge=1)

    @model_validator(mode="after")
    def _container_holds_bits(self) -> LayerBits:
        lo, hi = int_range(self.bits, self.scheme)
        if not self.container.holds(lo, hi):
            raise ValueError(
                f"container {self.container} cannot hold {self.bits}-bit {self.scheme} integers [{lo}, {hi}]"
            )
        return self

    @property
    def n_params(self) -> int:
        return self.out_features * self.in_features

    @property
    def n_groups(self) -> int:
        gs = self.in_features if self.block_size is None else self.block_size
        return self.out_features * math.ceil(self.in_features / gs)

    def _overhead_bits(self, zp_bits: int) -> int:
        zp = zp_bits if self.scheme is Scheme.ASYMMETRIC else 0
        return self.n_groups * (SCALE_BITS + zp)

    @property
    def logical_bits(self) -> int:
        return self.n_params * self.bits + self._overhead_bits(self.bits)

    @property
    def container_bytes(self) -> int:
        cb = self.container.bits
        weights = math.ceil(self.n_params * cb / 8)
        scales = self.n_groups * SCALE_BITS // 8
        zps = math.ceil(self.n_groups * cb / 8) if self.scheme is Scheme.ASYMMETRIC else 0
        return weights + scales + zps


def branch_factors(name: str, lb: LayerBits, rank: int) -> dict[str, LayerBits]:
    """The int8 factors of layer `name`'s branch y += up(down(x)), named as the modules that hold them:
    down (rank, in) and up (out, rank), each a Linear weight quantized per output row."""
    int8 = {"bits": BRANCH_BITS, "scheme": Scheme.SYMMETRIC, "block_size": None, "container": Container.INT8}
    return {
        name + BRANCH_DOWN: LayerBits(**int8, out_features=rank, in_features=lb.in_features),
        name + BRANCH_UP: LayerBits(**int8, out_features=lb.out_features, in_features=rank),
    }


class BitConfig(BaseModel):
    """Layer name (as in `model.named_modules()`) -> LayerBits, in model order; optionally an adapter branch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: dict[str, LayerBits] = Field(min_length=1)  # empty: avg_bits would divide by zero
    branch_rank: int | None = Field(
        default=None, ge=1, description="rank of an int8 low-rank adapter branch beside every layer; None: none"
    )

    def branch_layers(self) -> dict[str, LayerBits]:
        """The branch's int8 factors, two per layer (empty without a branch)."""
        if self.branch_rank is None:
            return {}
        return {k: v for n, lb in self.layers.items() for k, v in branch_factors(n, lb, self.branch_rank).items()}

    def stored_layers(self) -> dict[str, LayerBits]:
        """Every quantized weight the model stores: the configured layers, then the branch's factors."""
        return self.layers | self.branch_layers()

    @property
    def n_params(self) -> int:
        """Weights of the configured layers (the branch's factors are not counted: bits per weight are per
        weight of the model)."""
        return sum(l.n_params for l in self.layers.values())

    @property
    def avg_bits(self) -> float:
        """Logical bits per weight, scale and zero-point overhead and the branch included."""
        return sum(l.logical_bits for l in self.stored_layers().values()) / self.n_params

    @property
    def branch_bits(self) -> float:
        """The branch's share of `avg_bits` (0 without one)."""
        return sum(l.logical_bits for l in self.branch_layers().values()) / self.n_params

    @property
    def container_bytes(self) -> int:
        return sum(l.container_bytes for l in self.stored_layers().values())

    @property
    def container_bits_per_weight(self) -> float:
        return 8 * self.container_bytes / self.n_params

    def bits_vector(self) -> list[int]:
        return [l.bits for l in self.layers.values()]

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    def summary(self) -> str:
        branch = "" if self.branch_rank is None else f", int8 branch rank {self.branch_rank}"
        return (
            f"{self.avg_bits:.3f} bits/weight logical, {self.container_bits_per_weight:.3f} container, "
            f"{self.container_bytes / 1e6:.2f} MB{branch}"
        )

    def save(self, path: Path) -> None:
        from toolchain.io import atomic_write_text

        atomic_write_text(path, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> BitConfig:
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except OSError as exc:
            raise BadInputError(f"{path}: cannot read bit config: {exc.strerror}") from exc
        except ValidationError as exc:
            raise BadInputError(
                f"{path}: {'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors()
            ) from exc


def config_from_bits(
    specs,
    bits: list[int] | int,
    *,
    scheme: Scheme = Scheme.SYMMETRIC,
    block_size: int | None = None,
    containers=None,
) -> BitConfig:
    """A BitConfig for `specs` (LayerSpec list) with one bit-width per layer (or one for all).

    `containers(bits, scheme) -> Container | None` picks each layer's container (a profile's
    `weights.container_for`); by default the smallest ONNX container that holds the range.
    """
    per_layer = [bits] * len(specs) if isinstance(bits, int) else list(bits)
    if len(per_layer) != len(specs):
        raise ValueError(f"{len(per_layer)} bit-widths for {len(specs)} layers")
    pick = containers or smallest_container
    layers = {}
    for spec, b in zip(specs, per_layer):
        container = pick(b, scheme)
        if container is None:
            raise BadInputError(f"no allowed container holds {b}-bit {scheme} integers")
        layers[spec.name] = LayerBits(
            bits=b,
            scheme=scheme,
            block_size=block_size,
            container=container,
            out_features=spec.out_features,
            in_features=spec.in_features,
        )
    return BitConfig(layers=layers)


def smallest_container(bits: int, scheme: Scheme) -> Container:
    lo, hi = int_range(bits, scheme)
    signed = scheme is Scheme.SYMMETRIC
    fits = [c for c in Container if c.signed == signed and c.holds(lo, hi)]
    return min(fits, key=lambda c: c.bits)
