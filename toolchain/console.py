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
                f"{p.budget.max_avg_bits} bits/param" if p.budget.max_avg_bits else "",
                f"file {p.budget.max_model_mb} MB" if p.budget.max_model_mb else "",
                f"layers {p.budget.max_weight_mb} MB" if p.budget.max_weight_mb else "",
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


def print_results(results) -> None:
    """One row per device: bits per parameter (whole model), size, accuracy vs float, fidelity, latency,
    pass/fail."""
    t = Table(title="edgeq build")
    for col in (
        "device",
        "bits/param",
        "container MB",
        "file MB",
        "acc %",
        "float %",
        "max |Δ|",
        "agree %",
        "×float 1×128",
        "×ORT-dyn 1×128",
        "kernels",
        "result",
    ):
        t.add_column(col, justify="left" if col in ("device", "result") else "right")
    for r in results:
        m = r.manifest
        exact = m.fidelity.get("exact", {})
        ratios = m.latency.get("ratios", {})
        t.add_row(
            r.profile,
            _fmt(m.sizes.bits_per_param, ".2f"),
            f"{m.sizes.quantized_weight_container_bytes / 1e6:.2f}",
            f"{m.sizes.file_bytes / 1e6:.2f}",
            _fmt(m.accuracy["onnx"], ".2f"),
            _fmt(m.accuracy["float_reference"], ".2f"),
            _fmt(exact.get("max_abs_diff"), ".1e"),
            _fmt(exact.get("top1_agreement"), ".1f"),
            _fmt(ratios.get("float", {}).get("1x128"), ".2f"),
            _fmt(ratios.get("quantize_dynamic", {}).get("1x128"), ".2f"),
            _kernels(m.kernels),
            "[green]passed[/]" if r.passed else "[red]FAILED[/]",
        )
    _console().print(t)


_PATH = {"none": "weight-only", "int8_static": "int8 static", "int8_dynamic": "int8 dynamic"}


def _kernels(k: dict) -> str:
    """The compute path and how many quantized layers onnxruntime runs on its kernels; red when not all."""
    if not k.get("compute_path"):
        return "n/a"
    text = f"{_PATH.get(k['compute_path'], k['compute_path'])} {k['on_path']}/{k['quantized_layers']}"
    return f"[red]{text}[/]" if k.get("flag") else text


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)
