"""Regenerate the README's results from a finished build: the summary table and a report screenshot.

    python bench/readme_assets.py dist            # after `edgeq build --out dist`
    python bench/readme_assets.py --fresh bench/results/fresh_clone_build.json   # its dist, plus the
                                                  # whole README command's time (bench/fresh_clone_build.py)

Writes docs/report.png (headless Chromium screenshot of one device report, Debian package `chromium`)
and replaces the README block between `<!-- results -->` markers with a table made from dist/summary.json
and the build's recorded wall time. Nothing in that block is typed by hand.

    python bench/readme_assets.py --compare bench/results/compare_mr.json

writes bench/compare.py's results as markdown tables (intervals, paired tests against edgeq) into the README
block between `<!-- compare -->` markers, and the plot beside the JSON (accuracy vs size).

Every input must come from the checkout's code: a result whose recorded code hash (bench/record.py) or a
build whose build.json source hash differs is refused, so no block describes code that is gone.

    python bench/readme_assets.py --branch bench/results/adapter_branch.json

writes bench/adapter_branch.py's table (integer merge, merge-then-round and the int8 branch at equal
budgets) into the block between `<!-- branch -->` markers.

    python bench/readme_assets.py --compute-paths bench/results/compute_paths_mr.json

writes bench/compute_paths.py's table (each package against float, quantize_dynamic, static QDQ and
MatMulNBits: accuracy, paired test, file MB, kernels, latency ratios) into the `<!-- compute-paths -->` block.

    python bench/readme_assets.py --builds bench/results/builds_trained_tables_mr.json

writes bench/builds_compare.py's table (two builds' packages, validation and test, paired) into the
`<!-- builds -->` block.

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

from builds_compare import table as builds_table
from compare_report import compare_markdown, compare_plot
from compute_paths import table as compute_paths_table
from record import StaleResult, check_current

from toolchain.provenance import source_hash

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
        "| device | status | bits/parameter (whole model) | searched layers: bits/weight, container MB "
        "| model.onnx MB | accuracy % (ORT) | float % "
        "| max abs logit diff (exact) | speed vs float, 1×128 / 8×128 | speed vs ORT quantize_dynamic, 1×128 "
        "| kernels (on path / layers) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in devices:
        s, a, lat = d["sizes"], d["accuracy"], d["latency"]
        rf, rq = lat.get("ratios", {}).get("float", {}), lat.get("ratios", {}).get("quantize_dynamic", {})
        k = d.get("kernels", {})
        kern = "+".join(e for e in k.get("expected_kernels", []) if k.get("counts", {}).get(e)) or "none"
        exact = d["fidelity"].get("exact", {}).get("max_abs_diff")
        rows.append(
            f"| {d['profile']['name']} | {d['status']} | {s['bits_per_param']:.3f} "
            f"| {s['logical_bits_per_weight']:.3f}, {s['quantized_weight_container_bytes'] / 1e6:.2f} "
            f"| {s['file_bytes'] / 1e6:.2f} "
            f"| {a['onnx']:.2f} | {a['float_reference']:.2f} | {exact:.1e} "
            f"| {rf.get('1x128', 0):.2f}x / {rf.get('8x128', 0):.2f}x | {rq.get('1x128', 0):.2f}x "
            f"| {kern} {k.get('on_path', 0)}/{k.get('quantized_layers', 0)}{' (flagged)' if k.get('flag') else ''} |"
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
            if "peak_rss_mb" in build["stages"]:
                rows.append("")
                rows.append(_memory_line(build["stages"]))
    return "\n".join(rows)


def _memory_line(stages: dict) -> str:
    """Peak resident memory per stage, from build.json (toolchain.memory)."""
    peaks = stages["peak_rss_mb"]
    export = {k.split("/", 1)[1]: v for k, v in peaks.items() if k.startswith("export_validate/")}
    whole = [f"{k} {v / 1000:.2f}" for k, v in peaks.items() if "/" not in k]
    scope = "each stage's own peak" if stages.get("peak_rss_scope") == "stage" else "the process's peak so far"
    return (
        f"Peak resident memory, GB ({scope}): {', '.join(whole)}; export + validate up to "
        f"{max(export.values()) / 1000:.2f} ({max(export, key=export.get)}). Whole build: "
        f"**{max(peaks.values()) / 1000:.2f} GB**."
    )


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


def compare_assets(path: Path) -> None:
    """The tables (bench/compare_report.py) into the README's compare block, the plot beside the JSON."""
    result = json.loads(path.read_text())
    prov = check_current(result, path)
    png = compare_plot(result, path.with_suffix(".png")).resolve()
    body = compare_markdown(result, prov)
    shown = png.relative_to(REPO) if png.is_relative_to(REPO) else png
    replace_block(REPO / "README.md", "compare", f"{body}\n\n![accuracy against file size]({shown})")
    print(body + f"\n\n(plot: {png}; README compare block replaced)")


def check_dist(dist: Path) -> None:
    """Refuse a build made by other code than the checkout's (build.json records its source hash)."""
    build = json.loads((dist / "build.json").read_text()) if (dist / "build.json").is_file() else {}
    if build.get("source_hash") != source_hash():
        raise StaleResult(
            f"{dist}/build.json: built by code {build.get('source_hash')}, the checkout's is {source_hash()}: "
            "build again (or run bench/fresh_clone_build.py) before generating from it"
        )


def branch_table(result: dict) -> str:
    """bench/adapter_branch.py's rows: test accuracy of each method at each budget, and the branch's rank."""

    def cell(e: dict | None) -> str:
        if e is None:
            return "no rank fits"
        rank = f" (rank {e['branch_rank']}: {e['branch_bits']:.3f} of the bits)" if e["branch_rank"] else ""
        return f"{e['test']['accuracy']:.2f} % at {e['avg_bits']:.3f} bits{rank}"

    prov = result["provenance"]
    lines = [
        f"Measured at commit {prov['commit']} on {prov['machine']['date'][:10]} ({prov['data']}); "
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
    prov = result["provenance"]
    lines = [
        f"Measured at commit {prov['commit']} on {prov['machine']['date'][:10]} "
        f"({prov['data']}, {result['profile']}'s space; test split: accuracy, KL to the float model; training wall "
        "seconds in the header).",
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


def _current(path: Path) -> dict:
    result = json.loads(path.read_text())
    check_current(result, path)
    return result


def _measured_at(result: dict, what: str) -> str:
    prov = result["provenance"]
    return f"Measured at commit {prov['commit']} on {prov['machine']['date'][:10]} ({prov['data']}{what})"


def _builds_block(result: dict) -> str:
    head = (
        f"{_measured_at(result, '')}; baseline `{result['baseline']}`, candidate `{result['candidate']}`. "
        "McNemar's exact test of the candidate's package against the baseline's on the same documents; "
        "validation decides, test reports.\n\n"
    )
    return head + builds_table(result)


def search_table(result: dict) -> str:
    """bench/search_picks.py's result: per profile, the search's pick against its baselines on test."""
    names = {
        "search": "search (KL, confirmed on all of validation)",
        "prefix_search": "same search, accuracy on a 56-document prefix, equal time",
        "uniform": "best uniform within the pick's cost",
        "best_random": f"best of {result['random']} random feasible",
    }
    rows = [
        "| profile | configuration | bits/weight | test % (95 % CI) | search right only / it right only (p) |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        for arm, label in names.items():
            a = row["arms"][arm]
            if a is None:
                rows.append(f"| {row['profile']} | {label} | none | | |")
                continue
            lo, hi = a["test"]["ci95"]
            pair = a.get("test_vs_search")
            vs = (
                ""
                if pair is None
                else (
                    "same configuration"
                    if pair["same_config"]
                    else f"{pair['only_a_right']}/{pair['only_b_right']} (p {pair['p_value']:.3g})"
                )
            )
            rows.append(
                f"| {row['profile']} | {label} | {a['cost']['avg_bits']:.3f} | {a['test']['accuracy']:.2f} "
                f"({lo:.1f}–{hi:.1f}) | {vs} |"
            )
    return "\n".join(rows)


def _search_block(result: dict) -> str:
    s, docs = result["seconds"], result["docs"]
    rules = ", ".join(
        f"{name}: {r['mean_held_out_accuracy']:.2f} % / KL {r['mean_held_out_kl']:.4f}"
        for name, r in result["rules_on_validation_halves"].items()
    )
    where = f", test split, {result['test_docs']} documents"
    head = (
        f"{_measured_at(result, where)}. Chosen on validation "
        f"({docs['confirm_and_pool']} documents), reported on test; McNemar's exact test of each row against the "
        "search's pick, significant when p < 0.05, no correction for multiple comparisons.\n\n"
    )
    tail = (
        f"\n\nSearch time for the {len(result['rows']) + 1} shipped profiles: {s['build_search_with_costs']:.0f} s "
        f"(layer costs {s['layer_costs']:.0f} s, on {docs['fisher']} documents; screening on {docs['screen']}). "
        f"Selection rules, each picking on one half of the validation documents and measured on the other "
        f"(mean over profiles): {rules}."
    )
    return head + search_table(result) + tail


def _compute_paths_block(result: dict) -> str:
    docs = len(result["rows"][next(iter(result["rows"]))]["predictions"])
    head = (
        f"{_measured_at(result, f', test split, {docs} documents')}; McNemar's exact test against "
        "quantize_dynamic: documents only the row's model / only quantize_dynamic gets right.\n\n"
    )
    return head + compute_paths_table(result)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist", type=Path, nargs="?")
    parser.add_argument("--fresh", type=Path, default=None, help="bench/fresh_clone_build.py's JSON (and its dist)")
    parser.add_argument("--device", default="rpi5", help="whose report to screenshot")
    parser.add_argument("--compare", type=Path, default=None, help="bench/compare.py's JSON: tables and plot only")
    parser.add_argument("--branch", type=Path, default=None, help="bench/adapter_branch.py's JSON: its table only")
    parser.add_argument(
        "--branch-training", type=Path, default=None, help="bench/adapter_branch_training.py's JSON: its table only"
    )
    parser.add_argument(
        "--compute-paths", type=Path, default=None, help="bench/compute_paths.py's JSON: its table only"
    )
    parser.add_argument("--builds", type=Path, default=None, help="bench/builds_compare.py's JSON: its table only")
    parser.add_argument("--search", type=Path, default=None, help="bench/search_picks.py's JSON: its table only")
    args = parser.parse_args(argv)
    single = {  # README block -> (the result given for it, its text)
        "builds": (args.builds, _builds_block),
        "search": (args.search, _search_block),
        "compute-paths": (args.compute_paths, _compute_paths_block),
        "branch-training": (args.branch_training, branch_training_table),
        "branch": (args.branch, branch_table),
    }
    for marker, (path, text) in single.items():
        if path is not None:
            body = text(_current(path))
            replace_block(REPO / "README.md", marker, body)
            print(body + f"\n\n(README {marker} block replaced)")
            return
    if args.compare is not None:
        compare_assets(args.compare)
        return
    fresh = _current(args.fresh) if args.fresh else None
    if fresh is not None:
        args.dist = args.dist or Path(fresh["dist"])
    if args.dist is None:
        parser.error("give DIST (a build's output), --fresh JSON or --compare JSON")
    check_dist(args.dist)
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
