"""Every package of a build against onnxruntime's own quantizers: accuracy, file size, kernels and speed.

For each package of `--packages DIST` (an `edgeq build --out`) and for the references made from the same
float fine-tune (its ONNX graph; onnxruntime's `quantize_dynamic`, int8 per channel; static QDQ int8 from
`quantize_static`, calibrated on the build's calibration texts; MatMulNBits 4-bit RTN in blocks of 32), on
the run's test split, in onnxruntime with default optimizations:

- accuracy with its 95 % interval, and McNemar's exact test against `quantize_dynamic` (the alternative a
  user tries first);
- file MB; the matrix-multiply kernels of onnxruntime's optimized graph;
- median latency at 1 x 32, 1 x 128 and 8 x 128 tokens, every model in one interleaved loop (so the
  ratios share the machine's noise), as speed relative to the float graph and to `quantize_dynamic`. The
  loop runs `--rounds` times, each with new sessions; a ratio is the median over the rounds, shown with
  the lowest and highest round (on a shared 2-core VM one round's ratio moves by 10 to 30 %).

    python bench/suite.py run compute-paths --packages dist [--repeats 15] [--rounds 5] \
        [--out bench/results/compute_paths_<data>.json]

Nothing is chosen here; everything is reported on test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import onnx
import torch
from adapter_common import find_run
from compare_ort import EvalSet, float_onnx, measure, ort_matmul_nbits
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from record import provenance
from stats import accuracy_interval, decode_predictions, mcnemar

from toolchain.adapter import Run, run_files
from toolchain.build.device import CALIBRATION_TEXTS, calibration_texts
from toolchain.io import atomic_write_json
from toolchain.validators import runner
from toolchain.validators.kernels import MATMUL_KERNELS, optimized_graph
from toolchain.validators.latency import DYNAMIC_INT8, FLOAT, SHAPES, dynamic_int8_reference, measure_latency, shape_key

RESULTS = Path(__file__).resolve().parent / "results"
FLOAT_OPSET = 21
STATIC = "quantize_static_qdq"
NBITS = "matmul_nbits4_b32"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packages", type=Path, required=True, help="an `edgeq build --out` directory")
    p.add_argument("--repeats", type=int, default=15, help="timed runs per latency median")
    p.add_argument("--rounds", type=int, default=5, help="independent latency loops (new sessions each)")
    p.add_argument("--threads", type=int, default=runner.THREADS)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


class _Feeds(CalibrationDataReader):
    """Tokenized calibration texts, one text per run, padded to one shape."""

    def __init__(self, tokenizer, texts: list[str], names: list[str], max_length: int):
        self._it = iter([runner.tokenize(tokenizer, [t], names, max_length, pad_to=max_length) for t in texts])

    def get_next(self):
        return next(self._it, None)


def ort_static_qdq(float_path: Path, out: Path, tokenizer, texts: list[str], max_length: int) -> Path:
    """onnxruntime quantize_static, QDQ format: s8 per-channel weights, u8 activations (min/max)."""
    names = [i.name for i in onnx.load(str(float_path), load_external_data=False).graph.input]
    reader = _Feeds(tokenizer, texts, names, max_length)
    quantize_static(
        float_path, out, reader, quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
    )  # fmt: skip
    return out


def kernel_counts(path: Path, threads: int) -> dict[str, int]:
    counts = optimized_graph(path, threads).op_counts
    return {k: counts[k] for k in MATMUL_KERNELS if counts[k]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Run.load(find_run(args.packages, "; pass an edgeq build --out directory"))
    data = run_files.read_dataset(run.run_dir / run_files.DATA).source
    out = args.out or RESULTS / f"compute_paths_{data}.json"
    test = run.splits.test
    ev = EvalSet(run.tokenizer, test.texts, test.labels, run.float_logits("test"), run.settings.max_length)
    packages = {p.parent.name: p for p in sorted(args.packages.glob("*/model.onnx"))}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp = float_onnx(run.float_model(), run.tokenizer, work / "float.onnx", FLOAT_OPSET)
        calib = calibration_texts(run.splits.train, CALIBRATION_TEXTS)
        models = {
            FLOAT: fp,
            DYNAMIC_INT8: dynamic_int8_reference(fp, work / "qd.onnx"),
            STATIC: ort_static_qdq(fp, work / "static.onnx", run.tokenizer, calib, run.settings.max_length),
            NBITS: ort_matmul_nbits(fp, work / "nbits.onnx", 32),
        } | packages
        rows = {}
        for name, path in models.items():
            m = measure(path, ev, args.threads, args.repeats, latency=False)
            rows[name] = {k: m[k] for k in ("accuracy", "agreement", "kl", "file_bytes", "predictions")}
            rows[name]["kernels"] = kernel_counts(path, args.threads)
            print(f"{name}: {m['accuracy']:.2f} %, {m['file_bytes'] / 1e6:.2f} MB, {rows[name]['kernels']}", flush=True)
        rounds = []
        first, *rest = models
        for i in range(args.rounds):
            lat = measure_latency(models[first], {k: models[k] for k in rest}, run.tokenizer, test.texts,
                                  repeats=args.repeats, threads=args.threads)  # fmt: skip
            rounds.append({first: lat.ms["package"]} | {k: lat.ms[k] for k in rest})
            print(f"latency round {i + 1}/{args.rounds} done", flush=True)
    labels = test.labels
    qd_pred = decode_predictions(rows[DYNAMIC_INT8]["predictions"])
    for name, row in rows.items():
        pred = decode_predictions(row["predictions"])
        correct = sum(p == y for p, y in zip(pred, labels))
        row["interval"] = accuracy_interval(correct, len(labels))
        row["vs_quantize_dynamic"] = mcnemar(pred, qd_pred, labels)
        row["ms_rounds"] = [ms[name] for ms in rounds]
        row["speed_vs_float"] = _ratio_over_rounds(rounds, FLOAT, name)
        row["speed_vs_quantize_dynamic"] = _ratio_over_rounds(rounds, DYNAMIC_INT8, name)
    result = {
        "packages": str(args.packages),
        "run": str(run.run_dir),
        "shapes": [shape_key(b, t) for b, t in SHAPES],
        "host": lat.host,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "rows": rows,
        "provenance": provenance(
            __file__, data=data, seeds=[run.settings.seed], chosen_on="none", reported_on="test", threads=args.threads
        ),  # fmt: skip
    }
    atomic_write_json(out, result)
    print(table(result))
    print(f"wrote {out}")
    return 0


def _ratio_over_rounds(rounds: list[dict], reference: str, name: str) -> dict[str, dict[str, float]]:
    """shape -> median, lowest and highest over the rounds of reference ms / `name` ms (> 1: faster)."""
    out = {}
    for s in rounds[0][name]:
        ratios = sorted(ms[reference][s] / ms[name][s] for ms in rounds)
        out[s] = {"median": statistics.median(ratios), "min": ratios[0], "max": ratios[-1]}
    return out


def _ratio_cell(r: dict[str, float]) -> str:
    return f"{r['median']:.2f} ({r['min']:.2f}–{r['max']:.2f})"


def table(result: dict) -> str:
    """Markdown: one row per model, speed ratios at each shape."""
    shapes = result["shapes"]
    head = ["model", "accuracy % (95 % CI)", "vs quantize_dynamic (p)", "file MB", "kernels"]
    head += [f"× float {s}" for s in shapes] + [f"× quantize_dynamic {s}" for s in shapes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in result["rows"].items():
        lo, hi = r["interval"]
        t = r["vs_quantize_dynamic"]
        sig = "" if name == DYNAMIC_INT8 else f"{t['only_a_right']}/{t['only_b_right']} (p {t['p_value']:.3g})"
        kern = ", ".join(f"{k} {v}" for k, v in r["kernels"].items() if k not in ("MatMul", "FusedMatMul"))
        cells = [name, f"{r['accuracy']:.2f} ({lo:.1f}–{hi:.1f})", sig, f"{r['file_bytes'] / 1e6:.2f}", kern]
        cells += [_ratio_cell(r["speed_vs_float"][s]) for s in shapes]
        cells += [_ratio_cell(r["speed_vs_quantize_dynamic"][s]) for s in shapes]
        lines.append("| " + " | ".join(cells) + " |")
    host = result["host"]
    lines.append("")
    lines.append(
        f"Build host: {host['cpu']}, {host['threads']} threads, onnxruntime {host['onnxruntime']}; "
        f"speed = reference ms / model ms: per round the medians of {result['repeats']} interleaved runs of "
        f"every model, then the median over {result['rounds']} rounds (lowest–highest round)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
