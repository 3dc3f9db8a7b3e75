"""An independent check that a configuration satisfies a device profile, for the tests and benches.

Deliberately shares no code with the library's one definition of each cost and range: costs are
recomputed here from layer shapes and the formulas of docs/design.md (bits per weight = b + scale bits /
group size, plus a b-bit zero point per group when asymmetric; containers pack to whole bytes), and
integer ranges from the scheme definitions, instead of calling BitConfig.avg_bits,
LayerBits.container_bytes or the search space. A bug in either path then shows
as a disagreement rather than passing silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from toolchain.bitconfig import BitConfig, LayerBits
from toolchain.models import LayerSpec
from toolchain.profiles import DeviceProfile
from toolchain.whole_model import OutsideCost

_SCALE_BITS = 32  # fp32 scales (docs/onnxruntime.md: fp16 scales break onnxruntime's fusion)
_MB = 1_000_000
_SLACK = 1e-9  # relative: only float rounding of the average may pass over a cap
NOTHING_OUTSIDE = OutsideCost(0, 0, 0)  # no parameters outside the searched layers: layer-level budgets


def _integer_range(bits: int, scheme: str) -> tuple[int, int]:
    if scheme == "symmetric":  # narrow range, zero point 0
        return -(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _container_range(name: str) -> tuple[int, int, int]:
    """(width, min, max) of a container named like int4 / uint2."""
    width = int(name.lstrip("u").removeprefix("int"))
    if name.startswith("u"):
        return width, 0, 2**width - 1
    return width, -(2 ** (width - 1)), 2 ** (width - 1) - 1


def _groups(lb: LayerBits) -> int:
    per_row = 1 if lb.block_size is None else -(-lb.in_features // lb.block_size)
    return lb.out_features * per_row


def _layer_costs(lb: LayerBits) -> tuple[int, int]:
    """(logical bits, container bytes) of one layer, from first principles."""
    n, g = lb.out_features * lb.in_features, _groups(lb)
    asym = str(lb.scheme) == "asymmetric"
    width = _container_range(str(lb.container))[0]
    logical = n * lb.bits + g * (_SCALE_BITS + (lb.bits if asym else 0))
    stored = math.ceil(n * width / 8) + g * _SCALE_BITS // 8 + (math.ceil(g * width / 8) if asym else 0)
    return logical, stored


def _layer_problems(p: DeviceProfile, name: str, lb: LayerBits) -> list[str]:
    w, out = p.weights, []
    where = f"profile {p.name!r}: layer {name!r}"
    if lb.bits not in w.bits:
        out.append(f"{where}: bits {lb.bits} not allowed (weights.bits: {list(w.bits)})")
    if str(lb.scheme) not in {str(s) for s in w.schemes}:
        out.append(f"{where}: scheme {lb.scheme} not allowed (weights.schemes: {[str(s) for s in w.schemes]})")
    if lb.block_size is None and not w.per_channel:
        out.append(f"{where}: per-channel scales not allowed (weights.per_channel: false)")
    if lb.block_size is not None and lb.block_size not in w.block_sizes:
        out.append(f"{where}: block size {lb.block_size} not allowed (weights.block_sizes: {list(w.block_sizes)})")
    if str(lb.container) not in {str(c) for c in w.containers}:
        out.append(
            f"{where}: container {lb.container} not allowed (weights.containers: {[str(c) for c in w.containers]})"
        )
    lo, hi = _integer_range(lb.bits, str(lb.scheme))
    _, cmin, cmax = _container_range(str(lb.container))
    if lo < cmin or hi > cmax:
        out.append(
            f"{where}: {lb.bits}-bit {lb.scheme} integers [{lo}, {hi}] do not fit {lb.container} [{cmin}, {cmax}]"
        )
    return out


def _shape_problems(p: DeviceProfile, config: BitConfig, specs: Sequence[LayerSpec]) -> list[str]:
    want = {s.name: (s.out_features, s.in_features) for s in specs}
    out = [
        f"profile {p.name!r}: layer {n!r} is not a quantizable layer of the model"
        for n in config.layers
        if n not in want
    ]
    out += [
        f"profile {p.name!r}: layer {n!r} of the model has no configuration" for n in want if n not in config.layers
    ]
    for n, lb in config.layers.items():
        if n in want and (lb.out_features, lb.in_features) != want[n]:
            out.append(f"profile {p.name!r}: layer {n!r} shape {(lb.out_features, lb.in_features)} != model {want[n]}")
    return out


def _branch_costs(config: BitConfig) -> list[tuple[int, int]]:
    """(logical bits, bytes) of an int8 branch per layer: factors (r, in) and (out, r), one fp32 scale per
    row of each (r + out rows), int8 (8 bits, one byte) per factor entry."""
    r = config.branch_rank
    if r is None:
        return []
    out = []
    for lb in config.layers.values():
        entries, rows = r * (lb.in_features + lb.out_features), r + lb.out_features
        out.append((8 * entries + _SCALE_BITS * rows, entries + rows * _SCALE_BITS // 8))
    return out


def _budget_problems(p: DeviceProfile, config: BitConfig, outside: OutsideCost) -> list[str]:
    costs = [_layer_costs(lb) for lb in config.layers.values()] + _branch_costs(config)
    n = sum(lb.out_features * lb.in_features for lb in config.layers.values())
    avg = (sum(c[0] for c in costs) + outside.logical_bits) / (n + outside.n_params)
    mb = sum(c[1] for c in costs) / _MB
    params_mb = mb + outside.stored_bytes / _MB
    out, b = [], p.budget
    if b.max_avg_bits is not None and avg > b.max_avg_bits * (1 + _SLACK):
        out.append(f"profile {p.name!r}: {avg:.4f} bits/parameter over budget.max_avg_bits {b.max_avg_bits}")
    if b.max_weight_mb is not None and mb > b.max_weight_mb * (1 + _SLACK):
        out.append(f"profile {p.name!r}: {mb:.4f} MB of weights over budget.max_weight_mb {b.max_weight_mb}")
    if b.max_model_mb is not None and outside.n_params and params_mb > b.max_model_mb * (1 + _SLACK):
        out.append(f"profile {p.name!r}: {params_mb:.4f} MB of parameters over budget.max_model_mb {b.max_model_mb}")
    return out


def check_constraints(
    profile: DeviceProfile,
    config: BitConfig,
    specs: Sequence[LayerSpec] | None = None,
    outside: OutsideCost = NOTHING_OUTSIDE,
) -> list[str]:
    """Every way `config` breaks `profile` (allowed bits, schemes, granularities, containers and their
    integer ranges, an adapter branch, budgets with the branch's bytes; with `specs`, also the model's layer
    names and shapes). `outside`: what the parameters outside the searched layers cost under the profile
    (toolchain.whole_model.outside_cost): whole-model budgets count it (without it, `max_avg_bits` is
    checked over the searched layers alone and `max_model_mb` not at all). Empty means it fits."""
    if not config.layers:
        return [f"profile {profile.name!r}: the configuration has no layers"]
    problems = [] if specs is None else _shape_problems(profile, config, specs)
    for name, lb in config.layers.items():
        problems += _layer_problems(profile, name, lb)
    if config.branch_rank is not None and not profile.adapter_branch:
        problems.append(f"profile {profile.name!r}: an adapter branch is not allowed (adapter_branch: false)")
    return problems + _budget_problems(profile, config, outside)
