"""Wall time of the quantized base's MSE clip search on MiniLM's layers, and the integers it picks.

For every grid the shipped profiles train (`training_settings`) and each bit-width asked for, quantizes all
of MiniLM's Linear weights with `quantize_mse` at several step sizes (`CLIP_CHUNK_ELEMENTS`), and once with
the direct formula sum(((q - z) * s - w)^2) as a reference. Prints and writes seconds per (grid, bits) entry,
the ratio to the reference and how many integers differ from it (the shipped search must pick the same).
Every timing of one call comes from the same process, interleaved, so a shared machine slows them alike.

    python bench/quant_base_timing.py [--bits 2 4] [--threads 2] [--out bench/results/quant_base_timing.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from adapter_common import machine_info

import toolchain.quant.core as core
from toolchain.build.training import training_settings
from toolchain.data import load_dataset
from toolchain.io import atomic_write_json
from toolchain.models import default_model_path, load_model, quantizable_layers
from toolchain.profiles import default_profiles_dir, load_profiles
from toolchain.quant.core import int_range, quantize_mse

RESULTS = Path(__file__).resolve().parent / "results" / "quant_base_timing.json"
CHUNK_EXPONENTS = (20, 22, 24)


def reference_clip_errors(w, bits, scheme, block_size, ratios):
    """The textbook squared error per group and ratio, without the in-place rewrite: (R, out, G)."""
    qmin, qmax = int_range(bits, scheme)
    wf = w.float()
    lo, hi = core._group_min_max(wf, block_size)
    scale, zero_point = core._range_scales(lo, hi, bits, scheme, ratios[:, None, None])
    wg = core._grouped(wf, block_size)[None]
    z = 0 if zero_point is None else zero_point.float()[..., None]
    q = torch.clamp(torch.round(wg / scale[..., None]) + z, qmin, qmax)
    return (((q - z) * scale[..., None] - wg) ** 2).sum(-1)


def _timed(weights, bits, grid) -> tuple[float, list[torch.Tensor]]:
    t = time.perf_counter()
    qs = [quantize_mse(w, bits, grid.scheme, grid.block_size).q for w in weights]
    return time.perf_counter() - t, qs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bits", type=int, nargs="+", default=[2, 4])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = load_model(default_model_path(), load_dataset().label_names)
    specs = quantizable_layers(model)
    weights = [model.get_submodule(s.name).weight.detach() for s in specs]
    grids = training_settings(load_profiles([default_profiles_dir()])).grids
    shipped_chunk, shipped_errors = core.CLIP_CHUNK_ELEMENTS, core._clip_errors
    rows = []
    try:
        for grid in grids:
            for b in args.bits:
                core._clip_errors, core.CLIP_CHUNK_ELEMENTS = reference_clip_errors, 1 << 24
                ref_s, ref_q = _timed(weights, b, grid)
                core._clip_errors = shipped_errors
                row = {"grid": grid.key, "bits": b, "reference_s": round(ref_s, 3), "chunks": {}}
                for e in CHUNK_EXPONENTS:
                    core.CLIP_CHUNK_ELEMENTS = 1 << e
                    s, qs = _timed(weights, b, grid)
                    differ = sum(int((a != r).sum()) for a, r in zip(qs, ref_q))
                    row["chunks"][f"2^{e}"] = {"s": round(s, 3), "speedup": round(ref_s / s, 2), "ints_differ": differ}
                rows.append(row)
                print(json.dumps(row))
    finally:
        core.CLIP_CHUNK_ELEMENTS, core._clip_errors = shipped_chunk, shipped_errors
    result = {
        "layers": len(specs),
        "weights": sum(w.numel() for w in weights),
        "shipped_chunk": f"2^{shipped_chunk.bit_length() - 1}",
        "entries": rows,
        "machine": machine_info(args.threads),
    }
    atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
