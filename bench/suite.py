"""The benchmark suite's one entry point: list the named benchmarks and whether their results are current,
run one, or regenerate the README's measured blocks from current results.

    python bench/suite.py list
    python bench/suite.py run NAME [ARGS...]        ARGS go to the benchmark (`run NAME --help`)
    python bench/suite.py readme [ARGS...]          bench/readme_assets.py: refuses stale results

Every result a suite benchmark writes carries its provenance (bench/record.py): script, commit, code hash,
dataset, seeds, and which split chose and which reported. "current" in `list` means the result's code hash
is the checkout's; only current results reach the README.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from record import StaleResult, check_current

RESULTS = Path(__file__).resolve().parent / "results"

# name -> (module, what it measures, the results it writes: a glob under bench/results)
BENCHMARKS = {
    "compare": (
        "compare",
        "edgeq against PTQ, RTN, merge-then-round, per-config LoRA and PEQA, Shared-LoRA and onnxruntime's "
        "quantizers, at average-bit budgets, with intervals and paired tests (needs an `edgeq build --out`)",
        "compare_*.json",
    ),
    "compute-paths": (
        "compute_paths",
        "every package of a build against float, quantize_dynamic, static QDQ int8 and MatMulNBits 4-bit: "
        "accuracy with intervals and paired tests, file MB, kernels, latency ratios (needs an `edgeq build --out`)",
        "compute_paths_*.json",
    ),
    "static-calibration": (
        "static_calibration",
        "static int8 activation ranges, min/max against onnxruntime's percentile calibrator, on each static "
        "package's configuration: accuracy and KL on validation and test, McNemar (needs an `edgeq build --out`)",
        "static_calibration_*.json",
    ),
    "embedding-formats": (
        "embedding_formats",
        "embedding table formats (2/3/4/8 bits, per row or blocked) on a build's float fine-tune: validation "
        "accuracy, agreement, KL and cost; what the profiles' `embeddings:` were chosen on",
        "embedding_formats_*.json",
    ),
    "float-spread": (
        "float_finetune_spread",
        "the float reference's accuracy over fine-tune seeds, per schedule (choose on val, report test)",
        "float_finetune_spread_*.json",
    ),
    "adapter-branch": (
        "adapter_branch",
        "integer merge vs merge-then-round vs the int8 adapter branch at equal budgets, on a build's two runs",
        "adapter_branch.json",
    ),
    "adapter-branch-training": (
        "adapter_branch_training",
        "branch runs trained on spread vs budgeted configurations, and for fewer steps",
        "adapter_branch_training.json",
    ),
    "adapter-variants": (
        "adapter_variants",
        "the build's adapter retrained per variant (settings overrides; the never-refined training set), on "
        "held-out configurations, paired by configuration against a reference variant (needs a build's run)",
        "adapter_variants_*.json",
    ),
    "search": (
        "search_picks",
        "each profile's searched pick against the uniform within its cost, the best of 20 random feasible "
        "configurations and an accuracy-on-a-prefix search at equal time; the selection rule decided on "
        "validation halves; McNemar on test (needs an `edgeq build --out`)",
        "search_picks_*.json",
    ),
    "builds": (
        "builds_compare",
        "two builds of the same data, package by package: accuracy with intervals and McNemar's test, decided "
        "on validation, reported on test (a training or search change measured on what ships)",
        "builds_*.json",
    ),
    "fresh-clone": (
        "fresh_clone_build",
        "the README's build command verbatim in a fresh clone, installation included, timed",
        "fresh_clone_build.json",
    ),
}


def status(path: Path) -> str:
    try:
        prov = check_current(json.loads(path.read_text()), path)
    except StaleResult as exc:
        return f"stale: {str(exc).split(': ', 1)[1][:100]}"
    return f"current (commit {prov['commit']}, data {prov['data']}, seeds {prov['seeds']})"


def list_benchmarks() -> int:
    for name, (module, what, pattern) in BENCHMARKS.items():
        print(f"{name}  (bench/{module}.py)\n    {what}")
        for path in sorted(RESULTS.glob(pattern)):
            print(f"    {path.relative_to(RESULTS.parent.parent)}: {status(path)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("list", "run", "readme"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "list":
        return list_benchmarks()
    if argv[0] == "readme":
        importlib.import_module("readme_assets").main(argv[1:])
        return 0
    if len(argv) < 2 or argv[1] not in BENCHMARKS:
        print(f"run: name one of {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[argv[1]][0])
    return int(module.main(argv[2:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
