"""Regenerate the README's results from a finished build: the summary table and a report screenshot.

    python bench/readme_assets.py dist            # after `edgeq build --out dist`

Writes docs/report.png (headless Chromium screenshot of one device report, Debian package `chromium`)
and replaces the README block between `<!-- results -->` markers with a table made from dist/summary.json
and the build's recorded wall time. Nothing in that block is typed by hand.
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
    return "\n".join(rows)


def replace_block(readme: Path, marker: str, body: str) -> None:
    text = readme.read_text(encoding="utf-8")
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{body}\n{end}{tail}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist", type=Path)
    parser.add_argument("--device", default="rpi5", help="whose report to screenshot")
    args = parser.parse_args()
    errors = screenshot(args.dist / args.device / "report.html", REPO / "docs" / "report.png")
    if errors:
        raise SystemExit("console errors in the report:\n" + "\n".join(errors))
    replace_block(REPO / "README.md", "results", results_table(args.dist))
    print(f"wrote docs/report.png and the README results table from {args.dist}")


if __name__ == "__main__":
    main()
