"""Run an exported classifier in onnxruntime: sessions in the two modes validation needs, batched logits.

- exact: ORT_DISABLE_ALL, so DequantizeLinear -> MatMul runs as written (what the integers mean);
- device: default optimizations, what a device runs (onnxruntime fuses DQ -> MatMul into MatMulNBits with
  accuracy_level 4, which quantizes activations to int8: about 5e-3 relative error, docs/onnxruntime.md).
Tokenization matches toolchain.evaluate.encode (pad to the longest text of the batch, truncate), without
importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

import numpy as np
import onnxruntime as ort

from toolchain.data.dataset import ModelInput, tokenizer_args

THREADS = 2  # the validation machines have 2 cores; latency is reported at this setting
BATCH_SIZE = 32


class Mode(StrEnum):
    EXACT = "exact"
    DEVICE = "device"


def session(model: Path | bytes, mode: Mode, threads: int = THREADS) -> ort.InferenceSession:
    """An onnxruntime CPU session of a model file (or serialized model) in `mode`."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about unused initializers after fusion are expected
    if mode is Mode.EXACT:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def input_names(sess) -> list[str]:
    return [i.name for i in sess.get_inputs()]


def tokenize(
    tokenizer, texts: Sequence[ModelInput], names: list[str], max_length: int, pad_to: int | None = None
) -> dict:
    """int64 feeds for `names`; padded to the batch's longest text (or pair), or to `pad_to` tokens."""
    padding = "max_length" if pad_to else True
    first, second = tokenizer_args(texts)
    enc = tokenizer(
        first, second, padding=padding, truncation=True, max_length=pad_to or max_length, return_tensors="np"
    )
    return {n: np.asarray(enc[n], dtype=np.int64) for n in names}


def logits(sess, tokenizer, texts: Sequence[ModelInput], max_length: int, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """(N, C) float32 logits of `texts`, in batches."""
    names = input_names(sess)
    out = [
        sess.run(["logits"], tokenize(tokenizer, texts[i : i + batch_size], names, max_length))[0]
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)
