"""Whole-model budgets: what the parameters outside the searched layers cost, and what is left for the search.

A device stores the whole file, so a profile's `max_avg_bits` is logical bits per parameter over every
parameter of the model and `max_model_mb` bounds the file as written (docs/design.md, Budgets). The search
only chooses the searched layers' bits; everything else (embedding tables, the head Linears, biases and
norms) has a cost the profile fixes. `search_profile` turns a profile's whole-model budget into the budget
left for the searched layers, in the terms the search already works with (`max_avg_bits` over the
searched weights, `max_weight_mb` over their containers): the search, the branch choice and the
reachability check run on that profile; validation measures the shipped file against the real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from toolchain.errors import BadInputError
from toolchain.models import LayerSpec, table_modules
from toolchain.profiles import Budget, DeviceProfile, TensorQuant
from toolchain.quant.tables import table_cost, table_problems

MB = 1_000_000
FLOAT_BITS = TensorQuant.FLOAT.bits  # what a parameter kept as trained costs; an int8 head adds fp32 scales
# File bytes that are not parameters (nodes, names, shape constants, metadata): 0.11-0.21 MB on MiniLM's
# packages; the search keeps this much of a `max_model_mb` free, validation measures the real file.
GRAPH_RESERVE_BYTES = 300_000


@dataclass(frozen=True)
class OutsideParams:
    """The model's parameters outside the searched layers, by how a profile may store them."""

    tables: dict[str, tuple[int, int]]  # token tables (models.table_modules) -> (vocab, hidden)
    head: dict[str, tuple[int, int]]  # plain Linears outside the search -> (out, in) of the weight
    float_params: int  # everything else: biases, norms, narrow bias tables (always fp32)
    layer_params: int  # weights of the searched layers

    @classmethod
    def of_model(cls, model: nn.Module, specs: Sequence[LayerSpec]) -> OutsideParams:
        searched, stored = {s.name for s in specs}, set(table_modules(model))
        tables, head, counted = {}, {}, set()
        for name, m in model.named_modules():
            if name in stored:
                tables[name] = tuple(m.weight.shape)
                counted.add(id(m.weight))
            elif isinstance(m, nn.Linear):
                counted.add(id(m.weight))
                if name not in searched:
                    head[name] = tuple(m.weight.shape)
        rest = sum(p.numel() for p in model.parameters() if id(p) not in counted)
        return cls(tables, head, rest, sum(s.out_features * s.in_features for s in specs))

    @property
    def n_params(self) -> int:
        """Every parameter of the model."""
        entries = sum(v * h for v, h in self.tables.values()) + sum(o * i for o, i in self.head.values())
        return entries + self.float_params + self.layer_params


@dataclass(frozen=True)
class OutsideCost:
    """What the parameters outside the searched layers cost under one profile."""

    n_params: int
    logical_bits: int
    stored_bytes: int


def outside_cost(outside: OutsideParams, profile: DeviceProfile) -> OutsideCost:
    n = bits = nbytes = 0
    for vocab, hidden in outside.tables.values():
        b, s = table_cost(vocab, hidden, profile.embeddings)
        n, bits, nbytes = n + vocab * hidden, bits + b, nbytes + s
    for out_f, in_f in outside.head.values():
        scales = out_f * FLOAT_BITS if profile.head is TensorQuant.INT8 else 0  # one per output channel
        head_bits = out_f * in_f * profile.head.bits + scales
        n, bits, nbytes = n + out_f * in_f, bits + head_bits, nbytes + head_bits // 8
    n += outside.float_params
    bits += FLOAT_BITS * outside.float_params
    nbytes += FLOAT_BITS // 8 * outside.float_params
    return OutsideCost(n, bits, nbytes)


def outside_problems(outside: OutsideParams, profile: DeviceProfile) -> list[str]:
    """Why the profile's embedding format cannot store this model's tables (each naming the field)."""
    if profile.embeddings is None:
        return []
    out = []
    for name, (_, hidden) in outside.tables.items():
        out += [f"{profile.where}: {p}" for p in table_problems(name, hidden, profile.embeddings)]
    return out


def search_profile(profile: DeviceProfile, outside: OutsideParams) -> DeviceProfile | None:
    """`profile` with its whole-model budget turned into the budget left for the searched layers (None:
    the parameters outside them already spend it all)."""
    b, cost, n_layers = profile.budget, outside_cost(outside, profile), outside.layer_params
    avg = None if b.max_avg_bits is None else (b.max_avg_bits * outside.n_params - cost.logical_bits) / n_layers
    caps = [] if b.max_weight_mb is None else [b.max_weight_mb]
    if b.max_model_mb is not None:
        caps.append((b.max_model_mb * MB - cost.stored_bytes - GRAPH_RESERVE_BYTES) / MB)
    cap = min(caps, default=None)
    if (avg is not None and avg <= 0) or (cap is not None and cap <= 0):
        return None
    return profile.model_copy(update={"budget": Budget(max_avg_bits=avg, max_weight_mb=cap)})


def whole_model_estimate(outside: OutsideParams, profile: DeviceProfile, layer_bits: float, layer_bytes: int):
    """(bits per parameter, file MB) of the whole model when its searched layers cost `layer_bits` logical
    bits in total and `layer_bytes` container bytes (file: parameters plus GRAPH_RESERVE_BYTES)."""
    cost = outside_cost(outside, profile)
    avg = (cost.logical_bits + layer_bits) / outside.n_params
    return avg, (cost.stored_bytes + layer_bytes + GRAPH_RESERVE_BYTES) / MB


def search_profiles(
    profiles: Sequence[DeviceProfile], model: nn.Module, specs: Sequence[LayerSpec]
) -> list[DeviceProfile]:
    """Every profile's search profile, checked reachable; raises BadInputError naming each profile whose
    budget no configuration meets, with the smallest whole-model cost it could reach."""
    from toolchain.search.space import is_reachable, smallest_cost

    outside = OutsideParams.of_model(model, specs)
    problems, out = [], []
    for p in profiles:
        if found := outside_problems(outside, p):
            problems += found
            continue
        shrunk = search_profile(p, outside)
        if shrunk is not None and is_reachable(shrunk, specs):
            out.append(shrunk)
            continue
        least = smallest_cost(p, specs)
        avg, mb = whole_model_estimate(outside, p, least.avg_bits * outside.layer_params, least.container_bytes)
        problems.append(_unreachable(p, avg, mb, least.container_mb))
    if problems:
        raise BadInputError(problems)
    return out


def _unreachable(p: DeviceProfile, avg: float, mb: float, weight_mb: float) -> str:
    b, caps = p.budget, []
    if b.max_avg_bits is not None:
        caps.append(f"budget.max_avg_bits {b.max_avg_bits} (smallest achievable: {avg:.3f} bits/parameter)")
    if b.max_model_mb is not None:
        caps.append(f"budget.max_model_mb {b.max_model_mb} (smallest achievable file: about {mb:.2f} MB)")
    if b.max_weight_mb is not None:
        caps.append(f"budget.max_weight_mb {b.max_weight_mb} (smallest achievable: {weight_mb:.4f} MB)")
    embeddings = "float" if p.embeddings is None else p.embeddings.label()
    return (
        f"{p.where}: no configuration meets {' and '.join(caps)}; allowed bits {list(p.weights.bits)}, "
        f"embeddings {embeddings}, head {p.head}"
    )
