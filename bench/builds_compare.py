"""Two builds of the same data, package by package: which is more accurate, decided on validation and reported
on test, each with its 95 % interval and McNemar's exact test (candidate against baseline).

For a change to training or search that a build's packages carry (for example embedding tables trained
with the adapter against tables quantized after training), build once before and once after it on the same
data and seed, then:

    python bench/suite.py run builds --baseline dist_before --candidate dist_after [--label NAME] \
        [--out bench/results/builds_<label>_<data>.json]

Both builds must hold runs of the same data (hence the same seeded splits). Every profile present in both
is measured in onnxruntime with default optimizations (what a device runs), on the validation split (the
split a decision is taken on) and on the test split (reported only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from adapter_common import find_run
from compare_ort import EvalSet, measure
from record import provenance
from stats import accuracy_interval, decode_predictions, mcnemar

from toolchain.adapter import Run, run_files
from toolchain.io import atomic_write_json, sha256_file
from toolchain.validators import runner

RESULTS = Path(__file__).resolve().parent / "results"
SPLITS = ("val", "test")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=Path, required=True, help="an `edgeq build --out` directory (before)")
    p.add_argument("--candidate", type=Path, required=True, help="an `edgeq build --out` directory (after)")
    p.add_argument("--label", default="candidate", help="what the candidate changes (names the result file)")
    p.add_argument("--threads", type=int, default=runner.THREADS)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def _run_dir(dist: Path) -> Path:
    """The merged run of a build; it may be older code's (only its data is read)."""
    runs = [
        d
        for d in sorted((dist / ".edgeq").glob("run-*"))
        if (d / run_files.DATA).is_file() and "-branch-" not in d.name
    ]
    if len(runs) != 1:
        raise SystemExit(f"{dist}/.edgeq: {len(runs)} merged runs; pass an edgeq build --out directory")
    return runs[0]


def _same_data(a: Path, b: Path) -> None:
    seed = [json.loads((d / run_files.SETTINGS).read_text())["seed"] for d in (a, b)]
    if sha256_file(a / run_files.DATA) != sha256_file(b / run_files.DATA) or seed[0] != seed[1]:
        raise SystemExit(f"{a} and {b}: not the same data and seed, so not the same splits")


def _compare(pred: list[int], base: list[int], labels: list[int]) -> dict:
    correct = sum(p == y for p, y in zip(pred, labels))
    return {"interval": accuracy_interval(correct, len(labels)), "vs_baseline": mcnemar(pred, base, labels)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Run.load(find_run(args.candidate, "; pass an edgeq build --out directory"))
    _same_data(run.run_dir, _run_dir(args.baseline))
    data = run_files.read_dataset(run.run_dir / run_files.DATA).source
    out = args.out or RESULTS / f"builds_{args.label}_{data}.json"
    names = sorted(
        {p.parent.name for p in args.candidate.glob("*/model.onnx")}
        & {p.parent.name for p in args.baseline.glob("*/model.onnx")}
    )
    rows: dict[str, dict] = {}
    for split in SPLITS:
        ds = getattr(run.splits, split)
        ev = EvalSet(run.tokenizer, ds.texts, ds.labels, run.float_logits(split), run.settings.max_length)
        for name in names:
            got = {
                which: measure(dist / name / "model.onnx", ev, args.threads, repeats=0, latency=False)
                for which, dist in (("baseline", args.baseline), ("candidate", args.candidate))
            }
            base = decode_predictions(got["baseline"]["predictions"])
            row = rows.setdefault(name, {})
            for which, m in got.items():
                cells = {k: m[k] for k in ("accuracy", "agreement", "kl", "file_bytes", "predictions")}
                row.setdefault(which, {})[split] = cells | _compare(
                    decode_predictions(m["predictions"]), base, ds.labels
                )
            print(
                f"{name} {split}: {got['baseline']['accuracy']:.2f} -> {got['candidate']['accuracy']:.2f} %", flush=True
            )
    result = {
        "label": args.label,
        "baseline": str(args.baseline),
        "candidate": str(args.candidate),
        "run": str(run.run_dir),
        "docs": {s: len(getattr(run.splits, s).labels) for s in SPLITS},
        "rows": rows,
        "provenance": provenance(
            __file__, data=data, seeds=[run.settings.seed], chosen_on="val", reported_on="test", threads=args.threads
        ),
    }
    atomic_write_json(out, result)
    print(table(result))
    print(f"wrote {out}")
    return 0


def table(result: dict) -> str:
    """Markdown: per profile and split, baseline and candidate accuracy, their intervals, the paired test and
    each package's KL to the float model (what the search minimises within its accuracy tie)."""
    head = [
        "profile",
        "split",
        "baseline %",
        "candidate %",
        "candidate right only / baseline right only (p)",
        "KL to float",
        "MB",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in result["rows"].items():
        for split in SPLITS:
            b, c = row["baseline"][split], row["candidate"][split]
            t = c["vs_baseline"]
            cells = [
                name,
                f"{split} ({result['docs'][split]})",
                f"{b['accuracy']:.2f} ({b['interval'][0]:.1f}–{b['interval'][1]:.1f})",
                f"{c['accuracy']:.2f} ({c['interval'][0]:.1f}–{c['interval'][1]:.1f})",
                f"{t['only_a_right']}/{t['only_b_right']} (p {t['p_value']:.3g})",
                f"{b['kl']:.4f} -> {c['kl']:.4f}",
                f"{b['file_bytes'] / 1e6:.2f} -> {c['file_bytes'] / 1e6:.2f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
