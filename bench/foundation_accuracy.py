"""Foundation accuracy: float fine-tune, then post-training quantization at uniform bit-widths.

For the default model and data (all-MiniLM-L6-v2 on BBC News, stratified 70/10/20 split): a short LoRA (or
full) fine-tune gives the float reference; each uniform per-channel symmetric bit-width is then quantized
with plain round-to-nearest (absmax) and with the MSE-clipped search, and evaluated on the test split
(accuracy, and agreement / KL against the float model). Prints a table and writes
bench/results/foundation_accuracy.json with the machine and library versions.

    python bench/foundation_accuracy.py                     # about 5 minutes on 2 CPU threads
    python bench/foundation_accuracy.py --model DIR --data PATH --steps 20   # any local model and data
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from toolchain.bitconfig import config_from_bits
from toolchain.data import load_dataset, split
from toolchain.evaluate import Metrics, metrics, predict_logits
from toolchain.finetune import FinetuneMode, finetune
from toolchain.io import atomic_write_json
from toolchain.models import default_model_path, load_model, quantizable_layers
from toolchain.quant.core import Scheme
from toolchain.quant.model import Rounding, quantize_model

RESULTS = Path(__file__).resolve().parent / "results" / "foundation_accuracy.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="local model directory (default: MiniLM)")
    p.add_argument("--data", default=None, help="CSV/JSONL/folder (default: BBC News)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--head-lr", type=float, default=3e-3)
    p.add_argument("--mode", type=FinetuneMode, choices=list(FinetuneMode), default=FinetuneMode.LORA)
    p.add_argument("--bits", type=int, nargs="+", default=[8, 6, 4, 3, 2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads (the machines are shared)")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def machine_info(threads: int) -> dict:
    """Where and with what the numbers were measured."""
    import onnx
    import onnxruntime
    import transformers

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "git_commit": commit,
    }


def train_float(args: argparse.Namespace):
    """(fine-tuned float model, tokenizer, splits, training seconds)."""
    ds = load_dataset(args.data)
    splits = split(ds, seed=args.seed)
    model, tok = load_model(args.model or default_model_path(), ds.label_names, seed=args.seed)
    losses: list[float] = []
    t0 = time.perf_counter()

    def on_step(step: int, loss: float) -> None:
        losses.append(loss)
        if (step + 1) % 25 == 0 or step + 1 == args.steps:
            recent = losses[-25:]
            print(f"  step {step + 1}/{args.steps}  loss {sum(recent) / len(recent):.3f}", flush=True)

    finetune(
        model, tok, splits.train, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        head_lr=args.head_lr, max_length=args.max_length, seed=args.seed, mode=args.mode, on_step=on_step,
    )  # fmt: skip
    return model, tok, splits, time.perf_counter() - t0


def evaluate_bits(model, tok, test, reference: torch.Tensor, bits: int, max_length: int) -> dict:
    """RTN and MSE-clipped accuracy of uniform `bits` per-channel symmetric weights."""
    config = config_from_bits(quantizable_layers(model), bits, scheme=Scheme.SYMMETRIC, block_size=None)
    row: dict = {
        "bits": bits,
        "avg_bits": round(config.avg_bits, 4),
        "container_bytes": config.container_bytes,
    }
    for rounding in (Rounding.RTN, Rounding.MSE):
        t0 = time.perf_counter()
        qmodel = quantize_model(model, config, rounding)
        m = metrics(predict_logits(qmodel, tok, test.texts, max_length), test.labels, reference)
        row[str(rounding)] = m.to_dict() | {"seconds": round(time.perf_counter() - t0, 1)}
    return row


def table(float_metrics: Metrics, rows: list[dict]) -> str:
    lines = [
        f"float: accuracy {float_metrics.accuracy:.2f} %  macro-F1 {float_metrics.macro_f1:.2f} %",
        "bits | avg bits | RTN acc | RTN agree | RTN KL  | MSE acc | MSE agree | MSE KL",
        "-----|----------|---------|-----------|---------|---------|-----------|-------",
    ]
    for r in rows:
        rtn, mse = r["rtn"], r["mse"]
        kl_rtn, kl_mse = max(rtn["kl"], 0.0), max(mse["kl"], 0.0)  # KL >= 0; float noise prints -0.0000
        lines.append(
            f"{r['bits']:>4} | {r['avg_bits']:>8.3f} | {rtn['accuracy']:>7.2f} | {rtn['agreement']:>9.2f} | "
            f"{kl_rtn:>7.4f} | {mse['accuracy']:>7.2f} | {mse['agreement']:>9.2f} | {kl_mse:>6.4f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"fine-tuning: {args.mode}, {args.steps} steps, batch {args.batch_size}, max_length {args.max_length}")
    model, tok, splits, train_s = train_float(args)
    test = splits.test
    t0 = time.perf_counter()
    reference = predict_logits(model, tok, test.texts, args.max_length)
    float_metrics = metrics(reference, test.labels)
    eval_s = time.perf_counter() - t0
    rows = []
    for bits in args.bits:
        row = evaluate_bits(model, tok, test, reference, bits, args.max_length)
        rows.append(row)
        print(
            f"  {bits} bits: RTN {row['rtn']['accuracy']:.2f} %, MSE {row['mse']['accuracy']:.2f} %",
            flush=True,
        )
    print(table(float_metrics, rows))
    result = {
        "machine": machine_info(args.threads),
        "settings": {k: (str(v) if isinstance(v, Path | FinetuneMode) else v) for k, v in vars(args).items()},
        "model": str(args.model or default_model_path()),
        "data": args.data or "bbc-news",
        "split": {"train": len(splits.train), "val": len(splits.val), "test": len(test)},
        "scheme": "symmetric per-output-channel, embeddings / LayerNorms / pooler / head in float",
        "train_seconds": round(train_s, 1),
        "float_eval_seconds": round(eval_s, 1),
        "float": float_metrics.to_dict(),
        "rows": rows,
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
