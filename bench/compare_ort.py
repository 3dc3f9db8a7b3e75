"""The onnxruntime side of bench/compare.py: measure one ONNX model, and onnxruntime's own quantizers.

Every model is measured the same way: test-split logits in onnxruntime with default optimizations (what a
device computes; toolchain.validators.runner Mode.DEVICE), accuracy, macro-F1, top-1 agreement with and KL
from the float reference (toolchain.evaluate.metrics), each document's predicted class (for paired tests),
file bytes (model and external data), and median latency per shape (toolchain.validators.latency: 1 x 32,
1 x 128 and 8 x 128 tokens, warm-up first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import onnx
import torch
from stats import encode_predictions

from toolchain.evaluate import metrics
from toolchain.exporters.float_graph import export_float_graph
from toolchain.exporters.save import save_onnx
from toolchain.validators import runner
from toolchain.validators.latency import PACKAGE, dynamic_int8_reference, measure_latency
from toolchain.validators.size import model_files


class EvalSet:
    """What every model is measured on: the run's test split and the float model's logits on it."""

    def __init__(self, tokenizer, texts: list[str], labels: list[int], reference: torch.Tensor, max_length: int):
        self.tokenizer, self.texts, self.labels = tokenizer, texts, labels
        self.reference, self.max_length = reference, max_length


def file_bytes(model_path: Path) -> int:
    model = onnx.load(str(model_path), load_external_data=False)
    return sum(p.stat().st_size for p in model_files(Path(model_path), model))


def measure(model_path: Path, ev: EvalSet, threads: int, repeats: int, latency: bool = True) -> dict:
    """Accuracy metrics, size and latency of one ONNX classifier (output `logits`)."""
    t0 = time.perf_counter()
    sess = runner.session(Path(model_path), runner.Mode.DEVICE, threads)
    logits = torch.from_numpy(runner.logits(sess, ev.tokenizer, ev.texts, ev.max_length))
    out = metrics(logits, ev.labels, ev.reference).to_dict() | {"file_bytes": file_bytes(model_path)}
    out["predictions"] = encode_predictions(logits.argmax(-1).tolist())  # for paired tests (bench/stats.py)
    out["eval_s"] = round(time.perf_counter() - t0, 1)
    if latency:
        lat = measure_latency(Path(model_path), {}, ev.tokenizer, ev.texts, repeats=repeats, threads=threads)
        out["latency_ms"] = {s: round(ms, 2) for s, ms in lat.ms[PACKAGE].items()}
    return out


def float_onnx(model, tokenizer, path: Path, opset: int) -> Path:
    """The float model's graph (the exporter's float path), saved to `path`."""
    save_onnx(export_float_graph(model, tokenizer, opset), path)
    return path


def ort_matmul_nbits(float_path: Path, out: Path, block_size: int, algo: str = "default") -> Path:
    """onnxruntime MatMulNBitsQuantizer, 4-bit symmetric weights in blocks (`algo` "default" RTN or "hqq")."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    model = onnx.load(str(float_path))
    config = (
        mnb.HQQWeightOnlyQuantConfig(block_size=block_size, bits=4)
        if algo == "hqq"
        else mnb.DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, bits=4)
    )
    quant = mnb.MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True, algo_config=config)
    quant.process()
    save_onnx(quant.model.model, out)
    return out


def ort_baselines(float_path: Path, work: Path) -> dict[str, Callable[[], Path]]:
    """Name -> a function writing that baseline's model under `work` and returning its path."""
    fns = {"ort_dynamic_int8_per_channel": lambda: dynamic_int8_reference(float_path, work / "ort_dynamic_int8.onnx")}
    for block in (32, 128):
        fns[f"ort_matmul_nbits4_b{block}"] = lambda b=block: ort_matmul_nbits(float_path, work / f"nbits_b{b}.onnx", b)
    fns["ort_matmul_nbits4_hqq_b128"] = lambda: ort_matmul_nbits(float_path, work / "hqq_b128.onnx", 128, "hqq")
    return fns
