"""How far does the float reference move with the fine-tune's seed alone? (the float fine-tune's fragility)

Every package is compared to the float fine-tuned model, and every accuracy in the README follows it. This
fine-tunes the default model on the default split (split seed 0 throughout) once per seed and schedule
variant; the seed draws the head's and the LoRA's initialisation and the batches, nothing else changes
(seed 0 of "shipped" is the build's own float stage). Reports test and validation accuracy per fine-tune,
and per variant the mean, standard deviation and range. A schedule is chosen by its validation spread and
mean; test reports it.

    python bench/float_finetune_spread.py [--data mr] [--seeds 0 1 2 3 4] [--variants shipped "100 steps" ...]

Each fine-tune's row is saved as it finishes; running the same command again skips the rows already in --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from record import code_hash, provenance

from toolchain.adapter import TrainSettings
from toolchain.data import DEFAULT_DATA, load_dataset, split
from toolchain.evaluate import metrics, predict_logits
from toolchain.finetune import finetune
from toolchain.io import atomic_write_json
from toolchain.models import default_model_path, load_model

RESULTS = Path(__file__).resolve().parent / "results" / "float_finetune_spread.json"  # <stem>_<data>.json
SHIPPED = TrainSettings()
VARIANTS = {  # name -> (steps, linear decay after the warm-up)
    "shipped": (SHIPPED.float_steps, SHIPPED.float_decay),
    "100 steps": (100, False),
    "100 steps, decay": (100, True),
    "200 steps": (200, False),
    "400 steps, decay": (400, True),
    "800 steps, decay": (800, True),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--variants", nargs="+", default=["shipped", "100 steps"], choices=list(VARIANTS))
    p.add_argument("--data", default=DEFAULT_DATA, help=f"dataset name or file (default {DEFAULT_DATA})")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="default: results/float_finetune_spread_<data>.json")
    return p.parse_args(argv)


def fine_tune_row(ds, splits, variant: str, seed: int) -> dict:
    steps, decay = VARIANTS[variant]
    s = SHIPPED
    model, tok = load_model(default_model_path(), ds.label_names, seed=seed)  # as the build's float stage
    t0 = time.perf_counter()
    finetune(
        model, tok, splits.train, steps=steps, batch_size=s.batch_size, lr=s.float_lr, head_lr=s.head_lr,
        max_length=s.max_length, seed=seed, mode=s.float_mode, decay=decay,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    row = {"variant": variant, "seed": seed, "steps": steps, "decay": decay, "train_seconds": round(seconds, 1)}
    for name in ("val", "test"):
        part = getattr(splits, name)
        m = metrics(predict_logits(model, tok, part.texts, s.max_length), part.labels)
        row[name] = {"accuracy": round(m.accuracy, 4), "macro_f1": round(m.macro_f1, 4), "docs": len(part)}
    return row


def summary(rows: list[dict]) -> dict:
    out = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        acc = [r["test"]["accuracy"] for r in rows if r["variant"] == variant]
        val = [r["val"]["accuracy"] for r in rows if r["variant"] == variant]
        out[variant] = {
            "n": len(acc),
            "val_mean": round(statistics.mean(val), 3),
            "val_stdev": round(statistics.stdev(val), 3) if len(val) > 1 else None,
            "test_mean": round(statistics.mean(acc), 3),
            "test_stdev": round(statistics.stdev(acc), 3) if len(acc) > 1 else None,
            "test_min": min(acc),
            "test_max": max(acc),
        }
    return out


MAX_STDEV = 0.5  # points: the seed spread a float reference may have for a 1-point difference to be decidable


def choose(summary: dict) -> str:
    """The schedule to ship, decided on validation: among the variants whose validation spread is at most
    MAX_STDEV, the highest validation mean; when none is, the smallest validation spread."""
    steady = {v: s for v, s in summary.items() if s["val_stdev"] is not None and s["val_stdev"] <= MAX_STDEV}
    if steady:
        return max(steady, key=lambda v: steady[v]["val_mean"])
    return min(summary, key=lambda v: summary[v]["val_stdev"] if summary[v]["val_stdev"] is not None else 1e9)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    splits = split(ds, 0)
    args.out = args.out or RESULTS.with_name(f"float_finetune_spread_{ds.source}.json")
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if old.get("provenance", {}).get("code_hash") != code_hash(Path(__file__)):
        old = {}  # rows measured by other code are not resumed from
    rows = old.get("rows", [])
    done = {(r["variant"], r["seed"]) for r in rows}
    for variant in args.variants:
        for seed in args.seeds:
            if (variant, seed) in done:
                continue
            rows.append(fine_tune_row(ds, splits, variant, seed))
            print(rows[-1], flush=True)
            result = {
                "settings": {"lr": SHIPPED.float_lr, "head_lr": SHIPPED.head_lr, "batch_size": SHIPPED.batch_size,
                             "max_length": SHIPPED.max_length, "mode": str(SHIPPED.float_mode), "split_seed": 0},
                "rows": rows,
                "summary": summary(rows),
                "chosen_on_val": choose(summary(rows)),
                "provenance": provenance(__file__, data=ds.source, seeds=args.seeds, chosen_on="val",
                                         reported_on="test", threads=args.threads),
            }  # fmt: skip
            atomic_write_json(args.out, result)
    for variant, s in summary(rows).items():
        print(f"{variant:>16}: test {s['test_mean']:.2f} % mean, stdev {s['test_stdev']}, "
              f"range {s['test_min']:.2f}-{s['test_max']:.2f} ({s['n']} seeds)")  # fmt: skip
    print(f"chosen on validation: {choose(summary(rows))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
