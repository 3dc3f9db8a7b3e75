"""Static int8 activation ranges: min/max (the build's default) against onnxruntime's percentile calibrator.

For every package of `--dist` on the static path (`activations: int8_static`), the same configuration's
merged integers are exported twice from the build's run, once per calibration method, on the 64 training
texts the build calibrates on, and each graph is measured in onnxruntime (default optimizations) on the
validation and test splits: accuracy with its 95 % interval, KL to the float model, and McNemar's exact
test of percentile against min/max. The min/max export is the shipped package's graph; its predictions
are checked against the package's own before anything is reported.

    python bench/suite.py run static-calibration --dist dist [--out bench/results/static_calibration_<data>.json]

Validation decides which method a default should use; test reports.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from adapter_common import find_run
from compare_ort import EvalSet, measure
from record import provenance
from stats import accuracy_interval, decode_predictions, mcnemar

from toolchain.adapter import Run, run_files
from toolchain.bitconfig import BitConfig
from toolchain.build.device import CALIBRATION_TEXTS, calibration_texts
from toolchain.exporters import export_model
from toolchain.exporters.activation_qdq import Calibration
from toolchain.io import atomic_write_json
from toolchain.profiles import ActivationQuant, DeviceProfile
from toolchain.validators import runner

RESULTS = Path(__file__).resolve().parent / "results"
SPLITS = ("val", "test")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dist", type=Path, required=True, help="an `edgeq build --out` directory")
    p.add_argument("--threads", type=int, default=runner.THREADS)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def static_packages(dist: Path) -> dict[str, tuple[DeviceProfile, BitConfig]]:
    """Profile name -> (profile, configuration) of each static int8 package, from its manifest."""
    out = {}
    for path in sorted(dist.glob("*/manifest.json")):
        m = json.loads(path.read_text(encoding="utf-8"))
        profile = DeviceProfile.model_validate(m["profile"])
        if profile.activations is ActivationQuant.INT8_STATIC:
            out[profile.name] = (profile, BitConfig.model_validate(m["bit_config"]))
    return out


def _eval_set(run: Run, split: str) -> EvalSet:
    ds = getattr(run.splits, split)
    return EvalSet(run.tokenizer, ds.texts, ds.labels, run.float_logits(split), run.settings.max_length)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Run.load(find_run(args.dist, "; pass an edgeq build --out directory"))
    data = run_files.read_dataset(run.run_dir / run_files.DATA).source
    out = args.out or RESULTS / f"static_calibration_{data}.json"
    evals = {s: _eval_set(run, s) for s in SPLITS}
    calib = calibration_texts(run.splits.train, CALIBRATION_TEXTS)
    packages = static_packages(args.dist)
    if not packages:
        raise SystemExit(f"{args.dist}: no int8_static package")
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="edgeq-calib-bench-") as tmp:
        for name, (profile, config) in packages.items():
            qmodel = run.quantized_model(config, table=profile.embeddings)
            shipped = measure(args.dist / name / "model.onnx", evals["test"], args.threads, repeats=0, latency=False)
            row, preds = rows.setdefault(name, {}), {}
            for method in Calibration:
                path = Path(tmp) / name / method / "model.onnx"
                export_model(
                    qmodel, run.tokenizer, profile, config, path,
                    calibration_texts=calib, calibration=method, max_length=run.settings.max_length,
                )  # fmt: skip
                for split, ev in evals.items():
                    m = measure(path, ev, args.threads, repeats=0, latency=False)
                    pred = preds[method, split] = decode_predictions(m["predictions"])
                    correct = sum(p == y for p, y in zip(pred, ev.labels))
                    cells = {k: m[k] for k in ("accuracy", "agreement", "kl", "predictions")}
                    cells["interval"] = accuracy_interval(correct, len(ev.labels))
                    row.setdefault(method.value, {})[split] = cells
                    print(f"{name} {method} {split}: {m['accuracy']:.2f} %, KL {m['kl']:.4f}", flush=True)
            if row[Calibration.MINMAX.value]["test"]["predictions"] != shipped["predictions"]:
                raise SystemExit(f"{name}: the min/max re-export does not predict as the shipped package does")
            for split, ev in evals.items():
                pct, mm = preds[Calibration.PERCENTILE, split], preds[Calibration.MINMAX, split]
                row[Calibration.PERCENTILE.value][split]["vs_minmax"] = mcnemar(pct, mm, ev.labels)
    result = {
        "dist": str(args.dist),
        "run": str(run.run_dir),
        "calibration_texts": len(calib),
        "docs": {s: len(ev.labels) for s, ev in evals.items()},
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
    """Markdown: per static profile and split, each method's accuracy and KL, and the paired test."""
    head = ["profile", "split", "min/max %", "percentile %", "percentile right only / min/max right only (p)"]
    head += ["KL min/max", "KL percentile"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in result["rows"].items():
        for split in SPLITS:
            mm, pct = row[Calibration.MINMAX.value][split], row[Calibration.PERCENTILE.value][split]
            t = pct["vs_minmax"]
            cells = [name, f"{split} ({result['docs'][split]})"]
            cells += [f"{c['accuracy']:.2f} ({c['interval'][0]:.1f}–{c['interval'][1]:.1f})" for c in (mm, pct)]
            cells += [f"{t['only_a_right']}/{t['only_b_right']} (p {t['p_value']:.3g})"]
            cells += [f"{mm['kl']:.4f}", f"{pct['kl']:.4f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
