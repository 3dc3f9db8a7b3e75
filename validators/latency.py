"""Latency on the build host: median wall time of one inference per input shape, ratios to references.

Shapes (batch x tokens): 1 x 32, 1 x 128 and 8 x 128, at 2 threads with default optimizations (what a
device runs), after warm-up. The reference models (the float graph of the same model, and onnxruntime's
one-call `quantize_dynamic` of it) run in the same loop, interleaved run by run with the package, so a noisy
shared machine slows all alike; the report gives reference ms / package ms (> 1: the package is faster).
These are build-host figures: the host (CPU model, threads, onnxruntime version) is recorded with them.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from toolchain.validators import runner
from toolchain.validators.result import result_dict

SHAPES = ((1, 32), (1, 128), (8, 128))  # (batch, tokens)
# Informational (no profile budgets latency); interleaved runs share the noise. With 1 warm-up and 6 runs a
# build reported one package at 0.42x quantize_dynamic where the 15-run bench measured 1.02x.
WARMUP = 3
REPEATS = 15
PACKAGE = "package"
FLOAT = "float"
DYNAMIC_INT8 = "quantize_dynamic"  # onnxruntime.quantization.quantize_dynamic, int8 per channel


def shape_key(batch: int, tokens: int) -> str:
    return f"{batch}x{tokens}"


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class LatencyResult:
    name: str
    host: dict[str, str]  # cpu, threads, onnxruntime: where these figures were measured
    repeats: int
    ms: dict[str, dict[str, float]]  # model (package / float / quantize_dynamic) -> "BxT" -> median ms
    references: list[str] = field(default_factory=list)

    @property
    def ratios(self) -> dict[str, dict[str, float]]:
        """reference -> shape -> reference ms / package ms (> 1: the package is faster)."""
        pkg = self.ms[PACKAGE]
        return {
            ref: {s: self.ms[ref][s] / ms for s, ms in pkg.items() if ms > 0 and s in self.ms[ref]}
            for ref in self.references
        }

    @property
    def failures(self) -> list[str]:
        return []  # no latency budget in the profiles: reported, not judged

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self) | {"ratios": self.ratios}


def dynamic_int8_reference(float_path: Path, out: Path) -> Path:
    """onnxruntime's `quantize_dynamic` of a float graph (int8 per-channel weights, its defaults else):
    what a user gets from one call, the baseline a package is measured against."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        onnx.save(onnx.shape_inference.infer_shapes(onnx.load(str(float_path))), str(pre))
        quantize_dynamic(pre, out, per_channel=True, weight_type=QuantType.QInt8)
    return out


def _time_ms(sess, feeds: dict) -> float:
    start = time.perf_counter()
    sess.run(["logits"], feeds)
    return 1000.0 * (time.perf_counter() - start)


def _interleaved(sessions: dict[str, Any], feeds: dict[str, dict], repeats: int) -> dict[str, float]:
    """Median ms per session, each repetition running every session once in turn."""
    for _ in range(WARMUP):
        for key, sess in sessions.items():
            sess.run(["logits"], feeds[key])
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeats):
        for key, sess in sessions.items():
            times[key].append(_time_ms(sess, feeds[key]))
    return {k: statistics.median(v) for k, v in times.items()}


def measure_latency(
    model_path: Path,
    references: dict[str, Path],
    tokenizer,
    texts: list[str],
    *,
    shapes: tuple[tuple[int, int], ...] = SHAPES,
    repeats: int = REPEATS,
    threads: int = runner.THREADS,
) -> LatencyResult:
    """Median latency of the package and each reference model (name -> path) on `texts`, per shape."""
    paths = {PACKAGE: Path(model_path)} | {k: Path(p) for k, p in references.items()}
    sessions = {k: runner.session(p, runner.Mode.DEVICE, threads) for k, p in paths.items()}
    result: dict[str, dict[str, float]] = {k: {} for k in paths}
    for batch, tokens in shapes:
        batch_texts = (texts * batch)[:batch]
        feeds = {
            k: runner.tokenize(tokenizer, batch_texts, runner.input_names(s), tokens, pad_to=tokens)
            for k, s in sessions.items()
        }
        for key, ms in _interleaved(sessions, feeds, repeats).items():
            result[key][shape_key(batch, tokens)] = ms
    host = {"cpu": cpu_model(), "threads": str(threads), "onnxruntime": ort.__version__}
    return LatencyResult("latency", host, repeats, result, list(references))
