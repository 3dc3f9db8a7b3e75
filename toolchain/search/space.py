"""The configurations a device profile allows, what each costs, and whether a budget can be met at all.

A configuration here has one scheme and one granularity (a `Variant`) for all layers and one bit-width per
layer; bit-widths a scheme cannot store in any of the profile's containers are not offered for that scheme.
Two costs are kept apart (docs/design.md, Budgets): logical bits per weight (`BitConfig.avg_bits`, scale and
zero-point overhead included) and container bytes (what the device stores). MB means 10^6 bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from toolchain.bitconfig import BitConfig, config_from_bits, smallest_container
from toolchain.errors import BadInputError
from toolchain.models import LayerSpec
from toolchain.profiles import DeviceProfile
from toolchain.quant.containers import Container
from toolchain.quant.core import Scheme

BYTES_PER_MB = 1_000_000
_TOLERANCE = 1e-9  # relative slack on budget comparisons: avg_bits is a float ratio of integers

ContainerFor = Callable[[int, Scheme], Container | None]


@dataclass(frozen=True)
class Variant:
    """The scheme and granularity shared by every layer of one configuration (block None: per channel)."""

    scheme: Scheme
    block_size: int | None

    def label(self) -> str:
        gran = "per-channel" if self.block_size is None else f"block {self.block_size}"
        return f"{self.scheme} {gran}"


@dataclass(frozen=True)
class Cost:
    """Both costs of one configuration."""

    avg_bits: float  # logical bits per weight, overhead included
    container_bytes: int

    @property
    def container_mb(self) -> float:
        return self.container_bytes / BYTES_PER_MB

    def to_dict(self) -> dict:
        return {
            "avg_bits": self.avg_bits,
            "container_bytes": self.container_bytes,
            "container_mb": self.container_mb,
        }


def cost_of(config: BitConfig) -> Cost:
    return Cost(config.avg_bits, config.container_bytes)


@dataclass(frozen=True)
class Limit:
    """A budget as totals over all layers: logical bits and container bytes (None: not capped)."""

    max_logical_bits: float | None = None
    max_container_bytes: float | None = None

    @classmethod
    def of_profile(cls, profile: DeviceProfile, n_params: int) -> Limit:
        b = profile.budget
        return cls(
            None if b.max_avg_bits is None else b.max_avg_bits * n_params,
            None if b.max_weight_mb is None else b.max_weight_mb * BYTES_PER_MB,
        )

    @classmethod
    def avg_bits(cls, bits: float, n_params: int) -> Limit:
        return cls(max_logical_bits=bits * n_params)

    def excess(self, logical_bits: float, container_bytes: float) -> float:
        """Relative amount over the budget, summed over capped costs; 0 when within it."""
        out = 0.0
        for used, cap in ((logical_bits, self.max_logical_bits), (container_bytes, self.max_container_bytes)):
            if cap is not None and used > cap * (1 + _TOLERANCE):
                out += used / cap - 1
        return out

    def admits(self, config: BitConfig) -> bool:
        logical = config.avg_bits * config.n_params
        return self.excess(logical, config.container_bytes) == 0.0


@dataclass(frozen=True)
class SearchSpace:
    """Per-layer bit-widths, schemes and granularities to search, and the container each choice takes."""

    name: str
    specs: tuple[LayerSpec, ...]
    bits: tuple[int, ...]
    schemes: tuple[Scheme, ...]
    block_sizes: tuple[int | None, ...]
    container_for: ContainerFor = field(default=smallest_container, compare=False, repr=False)
    only: frozenset[Variant] | None = None  # variants allowed (None: every scheme x granularity pair)

    @classmethod
    def from_profile(cls, profile: DeviceProfile, specs: Sequence[LayerSpec]) -> SearchSpace:
        return cls(
            profile.name,
            tuple(specs),
            tuple(profile.weights.bits),
            tuple(profile.weights.schemes),
            tuple(profile.granularities()),
            profile.weights.container_for,
        )

    @classmethod
    def union(cls, spaces: Sequence[SearchSpace], name: str = "union") -> SearchSpace:
        """Every choice any of `spaces` allows, in the smallest container that holds it (training set).

        Only the scheme x granularity pairs some space allows are kept: a profile of asymmetric per-channel
        weights and one of symmetric blocks do not add asymmetric blocks.
        """
        if not spaces:
            raise ValueError("union of no search spaces")
        blocks = {b for s in spaces for b in s.block_sizes}
        return cls(
            name,
            spaces[0].specs,
            tuple(sorted({b for s in spaces for b in s.bits})),
            tuple(x for x in Scheme if any(x in s.schemes for s in spaces)),  # enum order: symmetric first
            tuple(([None] if None in blocks else []) + sorted(b for b in blocks if b is not None)),
            only=frozenset(v for s in spaces for v in s.variants()),
        )

    @property
    def n_params(self) -> int:
        return sum(s.out_features * s.in_features for s in self.specs)

    def variants(self) -> list[Variant]:
        """Scheme x granularity pairs with at least one storable bit-width, in a fixed order."""
        out = [Variant(s, b) for s in self.schemes for b in self.block_sizes]
        return [v for v in out if self.levels(v) and (self.only is None or v in self.only)]

    def levels(self, variant: Variant) -> tuple[int, ...]:
        """Bit-widths (ascending) this space can store under `variant`'s scheme."""
        return tuple(b for b in self.bits if self.container_for(b, variant.scheme) is not None)

    def build(self, bits: Sequence[int] | int, variant: Variant) -> BitConfig:
        return config_from_bits(
            list(self.specs),
            bits if isinstance(bits, int) else list(bits),
            scheme=variant.scheme,
            block_size=variant.block_size,
            containers=self.container_for,
        )

    def adopt(self, config: BitConfig) -> BitConfig | None:
        """`config` rebuilt with this space's containers, or None if it makes a choice this space forbids."""
        genome = genome_of(config)
        if genome is None or [s.name for s in self.specs] != list(config.layers):
            return None
        bits, variant = genome
        if variant not in self.variants() or not set(bits) <= set(self.levels(variant)):
            return None
        return self.build(bits, variant)

    def mismatches(self, config: BitConfig) -> int:
        """How many choices of `config` (layers, scheme, granularity) this space forbids: 0 when adoptable."""
        genome = genome_of(config)
        if genome is None:
            return len(config.layers)
        bits, variant = genome
        known = variant in self.variants()
        allowed = set(self.levels(variant) if known else self.bits)
        return int(not known) + sum(b not in allowed for b in bits)


def genome_of(config: BitConfig) -> tuple[list[int], Variant] | None:
    """Per-layer bits and the shared variant, or None if layers differ in scheme or granularity."""
    layers = list(config.layers.values())
    variants = {Variant(l.scheme, l.block_size) for l in layers}
    if len(variants) != 1:
        return None
    return [l.bits for l in layers], variants.pop()


def smallest_cost(profile: DeviceProfile, specs: Sequence[LayerSpec]) -> Cost:
    """The lowest logical bits per weight and the fewest container bytes any allowed configuration has.

    For a fixed variant both costs grow with every layer's bit-width, so the all-lowest-bits configuration
    of each variant is the cheapest of that variant; the two minima may come from different variants.
    """
    cheapest = [cost_of(c) for c in _cheapest_per_variant(profile, specs)]
    return Cost(min(c.avg_bits for c in cheapest), min(c.container_bytes for c in cheapest))


def _cheapest_per_variant(profile: DeviceProfile, specs: Sequence[LayerSpec]) -> list[BitConfig]:
    space = SearchSpace.from_profile(profile, specs)
    return [space.build(space.levels(v)[0], v) for v in space.variants()]


def is_reachable(profile: DeviceProfile, specs: Sequence[LayerSpec]) -> bool:
    """Whether some configuration meets `profile`'s budget."""
    limit = Limit.of_profile(profile, sum(s.out_features * s.in_features for s in specs))
    return any(limit.admits(c) for c in _cheapest_per_variant(profile, specs))


def require_reachable(profiles: Sequence[DeviceProfile], specs: Sequence[LayerSpec]) -> None:
    """Raise BadInputError naming every profile whose budget no configuration can meet."""
    problems = [_unreachable_message(p, smallest_cost(p, specs)) for p in profiles if not is_reachable(p, specs)]
    if problems:
        raise BadInputError(problems)


def _unreachable_message(profile: DeviceProfile, least: Cost) -> str:
    b = profile.budget
    caps = []
    if b.max_avg_bits is not None:
        caps.append(f"budget.max_avg_bits {b.max_avg_bits} (smallest achievable: {least.avg_bits:.4f} bits/weight)")
    if b.max_weight_mb is not None:
        caps.append(f"budget.max_weight_mb {b.max_weight_mb} (smallest achievable: {least.container_mb:.4f} MB)")
    return (
        f"{profile.where}: no configuration meets {' and '.join(caps)}; "
        f"allowed bits {list(profile.weights.bits)}, "
        f"containers {[str(c) for c in profile.weights.containers]}"
    )
