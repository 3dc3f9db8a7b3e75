"""Float vs exported QDQ latency and size for the default model (MiniLM, BBC News labels) on one profile.

Usage: python bench/export_latency.py [--profile rpi5] [--bits 4] [--block 128] [--repeats 20]

Exports the model for the profile with a uniform BitConfig (round-to-nearest: the rounding does not change
speed or size), then times the quantized and the float ONNX model side by side (interleaved, default
onnxruntime optimizations, 2 threads, sequence 128, batch 1 and 8) and writes
bench/results/export_latency.json with the machine and library versions.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from toolchain.bitconfig import config_from_bits
from toolchain.data import load_dataset, split
from toolchain.exporters import export_model
from toolchain.io import atomic_write_json
from toolchain.models import default_model_path, load_model, quantizable_layers
from toolchain.profiles import default_profiles_dir, load_profile
from toolchain.quant.model import Rounding, quantize_model
from toolchain.validators.latency import measure_latency
from toolchain.validators.validate import environment

RESULTS = Path(__file__).resolve().parent / "results" / "export_latency.json"


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _export(args, tmp: Path):
    profile = load_profile(default_profiles_dir() / f"{args.profile}.yaml")
    ds = load_dataset()
    model, tok = load_model(default_model_path(), ds.label_names)
    cfg = config_from_bits(
        quantizable_layers(model), args.bits, block_size=args.block, containers=profile.weights.container_for
    )
    splits = split(ds)
    start = time.perf_counter()
    qmodel = quantize_model(model, cfg, Rounding.RTN)
    result = export_model(
        qmodel, tok, profile, cfg, tmp / "model.onnx", calibration_texts=splits.train.texts[:128]
    )
    return profile, cfg, tok, result, time.perf_counter() - start, splits.test.texts[:8]


def _table(row: dict) -> str:
    lat = row["latency"]
    lines = [
        f"profile {row['profile']}: {row['bit_config']}",
        f"{'':24}{'float ONNX':>14}{'QDQ ONNX':>14}{'ratio':>9}",
        f"{'file MB':24}{row['float_file_mb']:>14.1f}{row['quantized_file_mb']:>14.1f}"
        f"{row['float_file_mb'] / row['quantized_file_mb']:>8.2f}x",
    ]
    seq = lat["seq_len"]
    for b in sorted(lat["quantized_ms"]):
        f, q = lat["float_ms"][b], lat["quantized_ms"][b]
        label = f"batch {b} x seq {seq} ms"
        lines.append(f"{label:24}{f:>14.1f}{q:>14.1f}{f / q:>8.2f}x")
    lines.append(
        f"quantized-weight containers {row['weight_container_mb']:.2f} MB; "
        f"{row['logical_bits_per_weight']:.3f} logical bits/weight; export {row['export_s']:.1f} s"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="rpi5")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--block", type=int, default=128, help="block size; 0 for per channel")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    args.block = args.block or None
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-") as tmp:
        profile, cfg, tok, result, export_s, texts = _export(args, Path(tmp))
        latency = measure_latency(
            result.model_path, result.float_model_path, tok, texts, repeats=args.repeats
        )
    row = {
        "profile": profile.name,
        "bit_config": cfg.summary(),
        "logical_bits_per_weight": cfg.avg_bits,
        "weight_container_mb": result.weight_container_bytes / 1e6,
        "quantized_file_mb": result.file_bytes / 1e6,
        "float_file_mb": result.float_file_bytes / 1e6,
        "export_s": export_s,
        "latency": latency.to_dict(),
    }
    env = environment() | {
        "cpu": _cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "torch": torch.__version__,
        "git_commit": _git_commit(),
        # the machine is shared: a load above the core count means contended (inflated) timings
        "load_average_1m": f"{os.getloadavg()[0]:.2f}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(_table(row))
    atomic_write_json(RESULTS, {"result": row, "environment": env})
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
