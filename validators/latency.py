"""Latency: median wall time of one inference at batch 1 and batch 8 (sequence 128), 2 threads, default
optimizations (what a device runs), after warm-up. The float ONNX model is measured in the same loop,
interleaved run by run with the quantized one, so a noisy shared machine slows both alike.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.validators import runner
from toolchain.validators.result import result_dict

BATCHES = (1, 8)
SEQ_LEN = 128
WARMUP = 1
REPEATS = 6  # informational (no profile budgets latency); interleaved runs share the noise


@dataclass(frozen=True)
class LatencyResult:
    name: str
    seq_len: int
    threads: int
    repeats: int
    quantized_ms: dict[int, float]  # batch -> median ms
    float_ms: dict[int, float] = field(default_factory=dict)  # empty when no float model was given

    @property
    def speedup(self) -> dict[int, float]:
        """float ms / quantized ms per batch (> 1: the quantized model is faster)."""
        return {b: self.float_ms[b] / q for b, q in self.quantized_ms.items() if b in self.float_ms and q > 0}

    @property
    def failures(self) -> list[str]:
        return []  # no latency budget in the profiles: reported, not judged

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self) | {"speedup": self.speedup}


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
    float_path: Path | None,
    tokenizer,
    texts: list[str],
    *,
    seq_len: int = SEQ_LEN,
    batches: tuple[int, ...] = BATCHES,
    repeats: int = REPEATS,
    threads: int = runner.THREADS,
) -> LatencyResult:
    """Median latency of the quantized (and float) model on `texts` padded to `seq_len` tokens."""
    paths = {"quantized": model_path} | ({"float": float_path} if float_path else {})
    sessions = {k: runner.session(p, runner.Mode.DEVICE, threads) for k, p in paths.items()}
    result: dict[str, dict[int, float]] = {k: {} for k in paths}
    for batch in batches:
        batch_texts = (texts * batch)[:batch]
        feeds = {
            k: runner.tokenize(tokenizer, batch_texts, runner.input_names(s), seq_len, pad_to=seq_len)
            for k, s in sessions.items()
        }
        for key, ms in _interleaved(sessions, feeds, repeats).items():
            result[key][batch] = ms
    return LatencyResult("latency", seq_len, threads, repeats, result["quantized"], result.get("float", {}))
