"""Which part of the shipped adapter model earns its accuracy: the integer moves, the learned scales or the head?

For held-out configurations of `adapter_generalisation.py` (same draw, same digests), on one split, four
models that differ in one part each:

    shipped      the run's merged integers and learned scales, with the jointly trained head (what ships)
    float_head   the same integers and scales, with the float fine-tune's head
    no_moves     the adapter product zeroed (B = 0): the MSE-clipped base integers (the rounding residual
                 alone moves none), the learned scales and the trained head
    ptq          MSE-clipped post-training quantization of the float fine-tune, float head

with the fraction of integers each moved off the MSE-clipped base.

    python bench/adapter_parts.py --run DIST/.edgeq/run-XXXX [--budgets 4.0 2.25] [--split test]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from adapter_common import (
    changed_fraction,
    coa_logits,
    float_head_logits,
    machine_info,
    ptq_logits,
    r2,
    split_metrics,
)
from adapter_generalisation import BUDGETS, add_draw_args, held_out

from toolchain.adapter import Run
from toolchain.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "adapter_parts.json"
MODELS = ("shipped", "float_head", "no_moves", "ptq")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a finished run (a default build's)")
    p.add_argument("--budgets", type=float, nargs="+", default=[4.0, 2.25], choices=BUDGETS, help="of the draw's")
    add_draw_args(p, budgets=False)
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


@contextlib.contextmanager
def no_moves(run: Run) -> Iterator[None]:
    """The run's adapter with every B = 0 (no integer moves) inside the block, as trained after it."""
    saved = [layer.lora_b.detach().clone() for layer in run.adapter_model.layers]
    try:
        with torch.no_grad():
            for layer in run.adapter_model.layers:
                layer.lora_b.zero_()
        yield
    finally:
        with torch.no_grad():
            for layer, b in zip(run.adapter_model.layers, saved, strict=True):
                layer.lora_b.copy_(b)


def logits_of(run: Run, config, split: str, model: str) -> torch.Tensor:
    if model == "shipped":
        return coa_logits(run, config, split)
    if model == "float_head":
        return float_head_logits(run, config, split)
    if model == "no_moves":
        with no_moves(run):
            return coa_logits(run, config, split)
    return ptq_logits(run, config, split)


def row(run: Run, budget: float, config, split: str) -> dict:
    out: dict = {"budget": budget, "avg_bits": round(config.avg_bits, 4)}
    for model in MODELS:
        out[model] = r2(split_metrics(run, logits_of(run, config, split, model), split))
    out["shipped_changed_fraction"] = round(changed_fraction(run, config), 5)
    with no_moves(run):
        out["no_moves_changed_fraction"] = round(changed_fraction(run, config), 5)
    return out


def summary(rows: dict) -> dict:
    """Per budget and model: mean accuracy and mean KL to the float model."""
    out = {}
    for budget in sorted({r["budget"] for r in rows.values()}):
        picked = [r for r in rows.values() if r["budget"] == budget]
        out[str(budget)] = {
            m: {
                "accuracy": round(statistics.mean(r[m]["accuracy"] for r in picked), 3),
                "kl": round(statistics.mean(r[m]["kl"] for r in picked), 4),
            }
            for m in MODELS
        }
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Run.load(args.run)
    configs = [(b, c) for b, c in held_out(run, BUDGETS, args.n, args.seed) if b in args.budgets]
    result = {"run": str(args.run), "draw": {"budgets": BUDGETS, "n": args.n, "seed": args.seed}, "rows": {}}
    result["split"] = args.split
    for budget, config in configs:
        result["rows"][config.digest()] = row(run, budget, config, args.split)
        print(budget, {m: result["rows"][config.digest()][m]["accuracy"] for m in MODELS}, flush=True)
        atomic_write_json(args.out, result | {"machine": machine_info(args.threads)})
    result["summary"] = summary(result["rows"])
    atomic_write_json(args.out, result | {"machine": machine_info(args.threads)})
    print(result["summary"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
