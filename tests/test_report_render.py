"""The HTML reports: numbers as printed, and rendering in headless Chromium with no console errors (slow)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from tiny import tiny_model_dir, write_tiny_corpus

from toolchain.cli import main

REPO = Path(__file__).resolve().parent.parent


def _assets():
    spec = importlib.util.spec_from_file_location("readme_assets", REPO / "bench" / "readme_assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_reports_render_without_console_errors(tmp_path, profiles_dir):
    model = tiny_model_dir(tmp_path / "model", hidden=128, max_positions=128)
    data = write_tiny_corpus(tmp_path / "data")
    out = tmp_path / "dist"
    main(
        [
            "build",
            "--profiles",
            str(profiles_dir / "rpi5.yaml"),
            "--model",
            str(model),
            "--data",
            str(data),
            "--out",
            str(out),
            "--steps",
            "20",
        ]
    )
    assets = _assets()
    for page in (out / "rpi5" / "report.html", out / "index.html"):
        png = tmp_path / f"{page.parent.name}.png"
        assert assets.screenshot(page, png) == []
        assert png.stat().st_size > 20_000  # a rendered page, not a blank one


def test_a_number_that_rounds_to_zero_prints_without_a_sign():
    from toolchain.build.report import _num

    assert _num(-0.001, " pts") == "0.00 pts"  # an accuracy drop of a fraction of a document
    assert (_num(-0.22, " pts"), _num(98.204, " %"), _num(None, " %")) == ("-0.22 pts", "98.20 %", "n/a")


def test_readme_memory_line_names_each_stage_and_the_largest_peak():
    stages = {
        "peak_rss_mb": {"training": 2310.4, "search": 1806.0, "branch": 990.2, "export_validate/a": 1501.0,
                        "export_validate/b": 1620.9},
        "peak_rss_scope": "stage",
    }  # fmt: skip
    line = _assets()._memory_line(stages)
    assert line.startswith("Peak resident memory, GB (each stage's own peak): training 2.31, search 1.81, branch 0.99;")
    assert "export + validate up to 1.62 (b)" in line and line.endswith("Whole build: **2.31 GB**.")
