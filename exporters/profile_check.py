"""Refuse an export request that breaks its device profile, before anything is computed or written.

Every problem is collected and raised at once as BadInputError, each naming the layer, the field, the bad
value and what the profile allows.
"""

from __future__ import annotations

from toolchain.bitconfig import BitConfig, LayerBits
from toolchain.errors import BadInputError
from toolchain.profiles import BLOCKED_MIN_OPSET, ActivationQuant, DeviceProfile
from toolchain.quant.core import QuantizedWeight


def _allowed(values) -> str:
    return ", ".join(str(v) for v in values) or "(none)"


def layer_problems(name: str, lb: LayerBits, profile: DeviceProfile) -> list[str]:
    """What in one layer's LayerBits the profile does not allow."""
    w, opset, where = profile.weights, profile.onnx.opset, f"bit config: layer {name!r}"
    out = []
    if lb.container not in w.containers:
        out.append(
            f"{where}: container: {lb.container} is not allowed by profile {profile.name!r} "
            f"(allowed: {_allowed(w.containers)})"
        )
    if lb.container.min_opset > opset:
        out.append(
            f"{where}: container: {lb.container} needs opset >= {lb.container.min_opset}, profile "
            f"{profile.name!r} has opset {opset}"
        )
    if lb.bits not in w.bits:
        out.append(f"{where}: bits: {lb.bits} is not one of {_allowed(w.bits)} (profile {profile.name!r})")
    if lb.scheme not in w.schemes:
        out.append(f"{where}: scheme: {lb.scheme} is not one of {_allowed(w.schemes)} (profile {profile.name!r})")
    if lb.block_size is None and not w.per_channel:
        out.append(f"{where}: block_size: per-channel (null) is not allowed; use one of {_allowed(w.block_sizes)}")
    if lb.block_size is not None and lb.block_size not in w.block_sizes:
        allowed = _allowed(w.block_sizes) + (", or null (per channel)" if w.per_channel else "")
        out.append(
            f"{where}: block_size: {lb.block_size} is not allowed by profile {profile.name!r} (allowed: {allowed})"
        )
    if lb.block_size is not None and opset < BLOCKED_MIN_OPSET:
        out.append(f"{where}: block_size: {lb.block_size} needs opset >= {BLOCKED_MIN_OPSET}, profile has {opset}")
    return out


def weight_problems(name: str, lb: LayerBits, qw: QuantizedWeight | None) -> list[str]:
    """The model's integer weight for a layer must be the one its LayerBits describes."""
    where = f"bit config: layer {name!r}"
    if qw is None:
        return [f"{where}: the model has no quantized layer (QuantLinear) of this name; quantize it first"]
    out = []
    for field, want, got in (
        ("bits", lb.bits, qw.bits),
        ("scheme", lb.scheme, qw.scheme),
        ("block_size", lb.block_size, qw.block_size),
        ("shape", (lb.out_features, lb.in_features), qw.shape),
    ):
        if want != got:
            out.append(f"{where}: {field}: the config says {want}, the model's quantized weight has {got}")
    lo, hi = lb.container.value_range
    qmin, qmax = int(qw.q.min()), int(qw.q.max())
    if qmin < lo or qmax > hi:
        out.append(f"{where}: integers [{qmin}, {qmax}] do not fit container {lb.container} [{lo}, {hi}]")
    return out


def branch_problems(profile: DeviceProfile, bit_config: BitConfig, weights: dict[str, QuantizedWeight]) -> list[str]:
    """An adapter branch needs a profile that allows one, and the model's int8 factors at its rank."""
    if bit_config.branch_rank is None:
        return []
    out = []
    if not profile.adapter_branch:
        out.append(
            f"bit config: branch_rank: {bit_config.branch_rank}: profile {profile.name!r} does not allow an "
            "adapter branch (adapter_branch: false)"
        )
    for name, lb in bit_config.branch_layers().items():
        out += weight_problems(name, lb, weights.get(name))
    return out


def export_problems(
    profile: DeviceProfile,
    bit_config: BitConfig,
    weights: dict[str, QuantizedWeight],
    has_calibration: bool,
) -> list[str]:
    """Every reason the export request cannot be honoured (empty when it can)."""
    problems = []
    for name, lb in bit_config.layers.items():
        problems += layer_problems(name, lb, profile)
        problems += weight_problems(name, lb, weights.get(name))
    problems += branch_problems(profile, bit_config, weights)
    extra = sorted(set(weights) - set(bit_config.stored_layers()))
    if extra:
        problems.append(f"bit config: quantized layers of the model missing from the config: {extra}")
    if profile.activations is ActivationQuant.INT8_STATIC and not has_calibration:
        problems.append(f"profile {profile.name!r}: activations: int8_static needs calibration_texts (training texts)")
    return problems


def check_export_request(
    profile: DeviceProfile, bit_config: BitConfig, weights: dict[str, QuantizedWeight], has_calibration: bool
) -> None:
    """Raise BadInputError listing every problem; return quietly when the request fits the profile."""
    problems = export_problems(profile, bit_config, weights, has_calibration)
    if problems:
        raise BadInputError(problems)
