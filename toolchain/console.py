"""Terminal tables (rich) for profiles and build results."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from toolchain.profiles import DeviceProfile


def _console() -> Console:
    return Console(width=160)


def print_profiles(profiles: list[DeviceProfile]) -> None:
    t = Table(title="device profiles")
    for col in ("name", "budget", "bits", "containers", "granularity", "opset", "ort >=", "acts", "max drop"):
        t.add_column(col)
    for p in profiles:
        budget = ", ".join(
            x
            for x in (
                f"{p.budget.max_avg_bits} bits/w" if p.budget.max_avg_bits else "",
                f"{p.budget.max_weight_mb} MB" if p.budget.max_weight_mb else "",
            )
            if x
        )
        gran = ", ".join("per-channel" if g is None else f"block {g}" for g in p.granularities())
        t.add_row(
            p.name,
            budget,
            ",".join(map(str, p.weights.bits)),
            ",".join(p.weights.containers),
            gran,
            str(p.onnx.opset),
            p.onnx.min_onnxruntime,
            p.activations,
            f"{p.accuracy.max_drop:g} pts",
        )
    _console().print(t)
