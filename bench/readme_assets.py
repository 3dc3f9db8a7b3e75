"""Regenerate the README's results from a finished build: the summary table and a report screenshot.

    python bench/readme_assets.py dist            # after `edgeq build --out dist`
    python bench/readme_assets.py --fresh bench/results/fresh_clone_build.json   # its dist, plus the
                                                  # whole README command's time (bench/fresh_clone_build.py)

Writes docs/report.png (headless Chromium screenshot of one device report, Debian package `chromium`)
and replaces the README block between `<!-- results -->` markers with a table made from dist/summary.json
and the build's recorded wall time. Nothing in that block is typed by hand.

    python bench/readme_assets.py --compare bench/results/compare.json

writes bench/compare.py's results as markdown tables (and which of issue 7's targets hold) into the README
block between `<!-- compare -->` markers, and the plot bench/results/compare.png (accuracy vs size).

    python bench/readme_assets.py --branch bench/results/adapter_branch.json

writes bench/adapter_branch.py's table (integer merge, merge-then-round and the int8 branch at equal
budgets) into the block between `<!-- branch -->` markers.

    python bench/readme_assets.py --branch-training bench/results/adapter_branch_training.json

writes bench/adapter_branch_training.py's table (spread and budgeted branch runs, test accuracy and KL)
into the block between `<!-- branch-training -->` markers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    return exe


def screenshot(html: Path, png: Path, size: str = "1200,1700") -> list[str]:
    """Render `html` headless to `png`; returns the page's console error lines (should be none)."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [
                chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                f"--screenshot={png}",
                html.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if not png.is_file():
        raise SystemExit(f"chromium wrote no screenshot: {proc.stderr[-2000:]}")
    return [line for line in proc.stderr.splitlines() if "CONSOLE" in line and "error" in line.lower()]


def results_table(dist: Path) -> str:
    devices = json.loads((dist / "summary.json").read_text())["devices"]
    rows = [
        "| device | status | logical bits/weight | container MB | model.onnx MB | accuracy % (ORT) | float % "
        "| max abs logit diff (exact) | ms batch 1 / 8 (quantized, float) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in devices:
        s, a, lat = d["sizes"], d["accuracy"], d["latency"]
        q, f = lat.get("quantized_ms", {}), lat.get("float_ms", {})
        exact = d["fidelity"].get("exact", {}).get("max_abs_diff")
        rows.append(
            f"| {d['profile']['name']} | {d['status']} | {s['logical_bits_per_weight']:.3f} "
            f"| {s['quantized_weight_container_bytes'] / 1e6:.2f} | {s['file_bytes'] / 1e6:.2f} "
            f"| {a['onnx']:.2f} | {a['float_reference']:.2f} | {exact:.1e} "
            f"| {q.get('1', 0):.0f} / {q.get('8', 0):.0f} ({f.get('1', 0):.0f} / {f.get('8', 0):.0f}) |"
        )
    build = json.loads((dist / "build.json").read_text()) if (dist / "build.json").is_file() else {}
    if build:
        rows.append("")
        rows.append(
            f"Build wall time: {build['wall_s'] / 60:.1f} min on {build['machine']} "
            f"(load average {build['load_average']:.1f} at the end)."
        )
        if "stages" in build:
            rows.append("")
            rows.append(_stage_line(build["stages"]))
    return "\n".join(rows)


def fresh_clone_line(fresh: dict) -> str:
    """The README's first command, run verbatim in a fresh clone (bench/fresh_clone_build.py)."""
    passed = sum(s == "passed" for s in fresh["devices"].values())
    return (
        f"The whole first command, run verbatim in a fresh clone at commit {fresh['commit']} (new `.venv`, "
        f"installation included), took **{fresh['command_wall_s'] / 60:.1f} min** and exited "
        f"{fresh['exit_code']}; {passed} of {len(fresh['devices'])} devices passed."
    )


def _stage_line(stages: dict) -> str:
    """Where the build's time went, from build.json (seconds)."""
    run = stages["training"]["run_stages"]
    parts = ", ".join(f"{name.replace('_', ' ')} {t['wall_s']:.0f}" for name, t in run.items())
    devices = stages.get("export_validate_wall_s", {})
    branch = ""
    if "branch_training" in stages:
        branch = (
            f"adapter-branch run {stages['branch_training']['wall_s']:.0f} and its choice "
            f"{stages['branch_search_wall_s']:.0f}; "
        )
    return (
        f"Stages, wall seconds: training {stages['training']['wall_s']:.0f} ({parts}); "
        f"search {stages['search_wall_s']:.0f}; {branch}export + validate {sum(devices.values()):.0f} "
        f"for {len(devices)} devices."
    )


def replace_block(readme: Path, marker: str, body: str) -> None:
    text = readme.read_text(encoding="utf-8")
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{body}\n{end}{tail}", encoding="utf-8")


COMPARE_METHODS = {
    "edgeq": "edgeq",
    "ptq_rtn": "PTQ absmax RTN",
    "ptq_mse": "PTQ MSE-clipped",
    "uniform_rtn": "uniform RTN",
    "naive_merge_rtn": "float adapter merged + RTN",
    "per_config_lora": "per-config LoRA",
    "peqa_scales": "per-config PEQA (scales only)",
}
ORT_METHODS = {
    "ort_dynamic_int8_per_channel": "ORT quantize_dynamic int8 per-channel",
    "ort_matmul_nbits4_b32": "ORT MatMulNBits 4-bit b32",
    "ort_matmul_nbits4_b128": "ORT MatMulNBits 4-bit b128",
    "ort_matmul_nbits4_hqq_b128": "ORT MatMulNBits 4-bit HQQ b128",
}


def _cells(m: dict) -> str:
    if "error" in m:
        return f"error: {m['error'][:60]} | | | | |"
    lat = m.get("latency_ms", {})
    return (
        f"{m['accuracy']:.2f} | {m['macro_f1']:.2f} | {m['agreement']:.2f} | {m['kl']:.4f} "
        f"| {m['file_bytes'] / 1e6:.1f} | {lat.get('1', float('nan')):.1f} / {lat.get('8', float('nan')):.1f}"
    )


def compare_table(result: dict) -> str:
    """Markdown tables of bench/compare.py's results: per target and method, then the cost."""
    head = "| accuracy % | macro-F1 % | agreement % | KL | file MB | ms batch 1 / 8 |"
    ref = result["reference"]
    rows = [f"| model {head}", "|---|---|---|---|---|---|---|"]
    rows.append(f"| float (ONNX) | {_cells(ref['float_onnx'])} |")
    rows += [
        f"| {label} | {_cells(result['ort_baselines'][k])} |"
        for k, label in ORT_METHODS.items()
        if k in result["ort_baselines"]
    ]
    rows += ["", f"| target | bits/weight | method {head}", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in result["rows"].items():
        for key, label in COMPARE_METHODS.items():
            m = row["methods"].get(key)
            if m is not None:
                bits = m.get("avg_bits", row["avg_bits"])
                rows.append(f"| {name} | {bits:.3f} | {label} | {_cells(m)} |")
    rows.append("")
    rows.append(_cost_line(result.get("cost", {})))
    return "\n".join(rows)


def _cost_line(cost: dict) -> str:
    w = cost.get("wall_s", {})
    if "per_config_one" not in w:
        return f"Cost (wall): edgeq training + search for all devices {w.get('edgeq_all_devices', float('nan')):.0f} s."
    return (
        f"Cost (wall, float stages shared {w['shared_float_stages']:.0f} s included on both sides): edgeq training "
        f"+ search for all devices {w['edgeq_all_devices']:.0f} s; one per-configuration fine-tune "
        f"{w['per_config_one']:.0f} s, all devices {w['per_config_all_devices']:.0f} s; ratio edgeq / one "
        f"per-config {w['edgeq_over_one_per_config']:.2f}."
    )


DROP_TARGETS = {3.0: 0.3, 2.5: 1.0, 2.25: 2.5}  # issue 7: average bits -> points below float at most


def _acc(m: dict | None) -> float | None:
    return None if m is None or "accuracy" not in m else m["accuracy"]


def compare_targets(result: dict) -> list[str]:
    """Issue 7's targets checked against the measured numbers, one line each (holds / does not / unmeasured)."""
    float_acc = result["reference"]["float_torch"]["accuracy"]
    rows = result["rows"]
    lines = []
    for budget, limit in DROP_TARGETS.items():
        row = next((r for r in rows.values() if r.get("budget") == budget), None)
        got = _acc(row and row["methods"].get("edgeq"))
        if got is None:
            lines.append(f"- {budget:g} bits within {limit:g} points of float: not measured")
            continue
        ok = float_acc - got <= limit
        lines.append(
            f"- {budget:g} bits within {limit:g} points of float {float_acc:.2f} %: edgeq {got:.2f} % "
            f"({float_acc - got:.2f} points below): {'holds' if ok else 'does not hold'}"
        )
    for name, r in rows.items():
        if r["avg_bits"] <= 2.5 + 1e-9:
            e, p = _acc(r["methods"].get("edgeq")), _acc(r["methods"].get("ptq_mse"))
            if e is not None and p is not None:
                verdict = "holds" if e > p else "does not hold"
                lines.append(
                    f"- {name} ({r['avg_bits']:.3f} bits) above PTQ MSE-clipped: {e:.2f} vs {p:.2f}: {verdict}"
                )
    for key, label in ORT_METHODS.items():
        b = result["ort_baselines"].get(key, {})
        if "accuracy" not in b:
            continue
        fits = [
            (m["accuracy"], name)
            for name, r in rows.items()
            if (m := r["methods"].get("edgeq")) and "accuracy" in m and m["file_bytes"] <= b["file_bytes"]
        ]
        if not fits:
            lines.append(f"- vs {label} ({b['file_bytes'] / 1e6:.1f} MB): no edgeq model as small: does not hold")
            continue
        acc, name = max(fits)
        verdict = "holds" if acc > b["accuracy"] else "does not hold"
        lines.append(
            f"- vs {label} ({b['accuracy']:.2f} %, {b['file_bytes'] / 1e6:.1f} MB): best edgeq model no larger "
            f"is {name} at {acc:.2f} %: {verdict}"
        )
    pairs = [
        (r["methods"]["edgeq"]["accuracy"] - r["methods"]["per_config_lora"]["accuracy"], name)
        for name, r in rows.items()
        if _acc(r["methods"].get("per_config_lora")) is not None and _acc(r["methods"].get("edgeq")) is not None
    ]
    if pairs:
        mean = sum(d for d, _ in pairs) / len(pairs)
        where = ", ".join(n for _, n in pairs)
        verdict = "holds" if mean >= -0.5 else "does not hold"
        lines.append(f"- within 0.5 points of per-config LoRA ({where}): edgeq {mean:+.2f} on average: {verdict}")
    ratio = result.get("cost", {}).get("wall_s", {}).get("edgeq_over_one_per_config")
    if ratio is not None:
        verdict = "holds" if ratio <= 1.5 else "does not hold"
        lines.append(f"- all devices at most 1.5x one per-config fine-tune (wall): {ratio:.2f}x: {verdict}")
    return lines


def compare_plot(result: dict, png: Path) -> Path:
    """Accuracy against file size, one marker per method, float and onnxruntime baselines as references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for key, label in COMPARE_METHODS.items():
        pts = [r["methods"][key] for r in result["rows"].values() if "accuracy" in r["methods"].get(key, {})]
        if pts:
            ax.scatter([p["file_bytes"] / 1e6 for p in pts], [p["accuracy"] for p in pts], label=label, alpha=0.8)
    for key, label in ORT_METHODS.items():
        m = result["ort_baselines"].get(key, {})
        if "accuracy" in m:
            ax.scatter(m["file_bytes"] / 1e6, m["accuracy"], marker="x", s=60, label=label)
    f = result["reference"]["float_onnx"]
    ax.scatter(f["file_bytes"] / 1e6, f["accuracy"], marker="*", s=120, color="black", label="float (ONNX)")
    ax.set_xlabel("model file MB")
    ax.set_ylabel("test accuracy % (onnxruntime)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def compare_assets(path: Path) -> None:
    """The tables and the targets' status (markdown) into the README's compare block, the plot beside the JSON."""
    result = json.loads(path.read_text())
    png = compare_plot(result, path.with_suffix(".png")).resolve()
    machine = result.get("machine", {})
    when = f"Measured at commit {machine.get('git_commit', '?')} on {machine.get('date', '?')[:10]}.\n\n"
    body = when + compare_table(result) + "\n\nTargets, checked from the JSON:\n\n" + "\n".join(compare_targets(result))
    shown = png.relative_to(REPO) if png.is_relative_to(REPO) else png
    replace_block(REPO / "README.md", "compare", f"{body}\n\n![accuracy against file size]({shown})")
    print(body + f"\n\n(plot: {png}; README compare block replaced)")


def branch_table(result: dict) -> str:
    """bench/adapter_branch.py's rows: test accuracy of each method at each budget, and the branch's rank."""

    def cell(e: dict | None) -> str:
        if e is None:
            return "no rank fits"
        rank = f" (rank {e['branch_rank']}: {e['branch_bits']:.3f} of the bits)" if e["branch_rank"] else ""
        return f"{e['test']['accuracy']:.2f} % at {e['avg_bits']:.3f} bits{rank}"

    machine = result.get("machine", {})
    lines = [
        f"Measured at commit {machine.get('git_commit', '?')} on {machine.get('date', '?')[:10]}; "
        f"float reference {result['float_test_accuracy']:.2f} %; test split, which no choice saw.",
        "",
        "| budget (bits) | integer merge | merge-then-round | int8 branch | the build would ship |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        cells = [cell(r["integer_merge"]), cell(r["merge_then_round"]), cell(r["int8_branch"])]
        lines.append(f"| {r['budget']:g} | " + " | ".join(cells) + f" | {r['build_would_ship']} |")
    return "\n".join(lines)


def branch_training_table(result: dict) -> str:
    """bench/adapter_branch_training.py's rows: one column per branch run, test accuracy and KL per config."""
    runs = list(result["runs"])
    by = {(r["run"], r["config"]): r for r in result["rows"]}
    configs = list(dict.fromkeys(r["config"] for r in result["rows"]))
    machine = result.get("machine", {})
    lines = [
        f"Measured at commit {machine.get('git_commit', '?')} on {machine.get('date', '?')[:10]} "
        f"({result['profile']}'s space; test split: accuracy, KL to the float model; training wall seconds in "
        "the header).",
        "",
        "| configuration (int8 branch) | "
        + " | ".join(f"{name} ({result['runs'][name]['wall_s']:.0f} s)" for name in runs)
        + " | base in the budgeted training set |",
        "|---|" + "---|" * (len(runs) + 1),
    ]
    for c in configs:
        cells = [f"{by[(n, c)]['test']['accuracy']:.2f} %, KL {by[(n, c)]['test']['kl']:.4f}" for n in runs]
        fits = "yes" if by[(runs[0], c)]["in_budgeted_training_set"] else "no"
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {fits} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist", type=Path, nargs="?")
    parser.add_argument("--fresh", type=Path, default=None, help="bench/fresh_clone_build.py's JSON (and its dist)")
    parser.add_argument("--device", default="rpi5", help="whose report to screenshot")
    parser.add_argument("--compare", type=Path, default=None, help="bench/compare.py's JSON: tables and plot only")
    parser.add_argument("--branch", type=Path, default=None, help="bench/adapter_branch.py's JSON: its table only")
    parser.add_argument(
        "--branch-training", type=Path, default=None, help="bench/adapter_branch_training.py's JSON: its table only"
    )
    args = parser.parse_args()
    if args.branch_training is not None:
        body = branch_training_table(json.loads(args.branch_training.read_text()))
        replace_block(REPO / "README.md", "branch-training", body)
        print(body + "\n\n(README branch-training block replaced)")
        return
    if args.compare is not None:
        compare_assets(args.compare)
        return
    if args.branch is not None:
        body = branch_table(json.loads(args.branch.read_text()))
        replace_block(REPO / "README.md", "branch", body)
        print(body + "\n\n(README branch block replaced)")
        return
    fresh = json.loads(args.fresh.read_text()) if args.fresh else None
    if fresh is not None:
        args.dist = args.dist or Path(fresh["dist"])
    if args.dist is None:
        parser.error("give DIST (a build's output), --fresh JSON or --compare JSON")
    (REPO / "docs").mkdir(exist_ok=True)
    errors = screenshot(args.dist / args.device / "report.html", REPO / "docs" / "report.png")
    if errors:
        raise SystemExit("console errors in the report:\n" + "\n".join(errors))
    shot = f"![The {args.device} report of this build](docs/report.png)"
    lines = [results_table(args.dist)] + ([fresh_clone_line(fresh)] if fresh else []) + [shot]
    replace_block(REPO / "README.md", "results", "\n\n".join(lines))
    print(f"wrote docs/report.png and the README results table from {args.dist}")


if __name__ == "__main__":
    main()
