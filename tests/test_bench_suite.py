"""The benchmark suite's instruments: interval and paired test against hand-computed values, result
provenance, and the README generator refusing results that other code measured."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from toolchain.provenance import source_hash

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))  # bench scripts import their siblings by name
    try:
        import readme_assets
        import record
        import stats

        yield stats, record, readme_assets
    finally:
        sys.path.remove(str(BENCH))


def test_wilson_interval_by_hand(bench) -> None:
    stats, _, _ = bench
    lo, hi = stats.accuracy_interval(50, 100)
    # p = 1/2, n = 100, z = 1.959964: centre 1/2, half-width z sqrt(1/400 + z^2/40000) / (1 + z^2/100)
    assert lo == pytest.approx(40.383, abs=1e-3) and hi == pytest.approx(59.617, abs=1e-3)
    lo, hi = stats.accuracy_interval(100, 100)
    assert hi == pytest.approx(100.0) and lo == pytest.approx(96.301, abs=1e-3)  # z^2 / (n + z^2)


def test_mcnemar_exact_by_hand(bench) -> None:
    stats, _, _ = bench
    labels = [1] * 10
    a = [1] * 7 + [0] + [1, 0]  # right on 0-6, wrong on 7, right on 8, wrong on 9
    b = [0] * 7 + [1] + [1, 0]  # wrong on 0-6, right on 7; the last two agree with a
    t = stats.mcnemar(a, b, labels)
    assert (t["only_a_right"], t["only_b_right"]) == (7, 1)
    assert t["p_value"] == pytest.approx(2 * (1 + 8) / 2**8)  # two-sided binomial tail, 0.0703
    assert not t["significant"]
    assert stats.mcnemar(a, a, labels) == {"only_a_right": 0, "only_b_right": 0, "p_value": 1.0, "significant": False}
    six = stats.mcnemar([1] * 6, [0] * 6, [1] * 6)
    assert six["p_value"] == pytest.approx(2 / 2**6) and six["significant"]  # 0.031
    with pytest.raises(ValueError, match="lengths differ"):
        stats.mcnemar([1], [1, 0], [1, 0])


def test_predictions_round_trip(bench) -> None:
    stats, _, _ = bench
    assert stats.encode_predictions([0, 3, 9, 1]) == "0391"
    assert stats.decode_predictions("0391") == [0, 3, 9, 1] and stats.decode_predictions([12, 3]) == [12, 3]
    with pytest.raises(ValueError):
        stats.encode_predictions([10])


def test_a_result_records_its_provenance_and_goes_stale(bench, tmp_path: Path) -> None:
    _, record, _ = bench
    prov = record.provenance(
        BENCH / "compare.py", data="mr", seeds=[0, 1], chosen_on="val", reported_on="test", threads=2
    )
    assert prov["script"] == "bench/compare.py" and prov["data"] == "mr" and prov["seeds"] == [0, 1]
    assert (prov["chosen_on"], prov["reported_on"]) == ("val", "test") and len(prov["code_hash"]) == 16
    assert {BENCH / "compare_ort.py", BENCH / "stats.py", BENCH / "record.py"} <= record.bench_imports(
        BENCH / "compare.py"
    )
    path = tmp_path / "r.json"
    assert record.check_current({"provenance": prov}, path) == prov
    with pytest.raises(record.StaleResult, match="measured by code 0000000000000000"):
        record.check_current({"provenance": prov | {"code_hash": "0" * 16}}, path)
    with pytest.raises(record.StaleResult, match="no provenance"):
        record.check_current({"rows": []}, path)
    with pytest.raises(record.StaleResult, match="is gone from this checkout"):
        record.check_current({"provenance": prov | {"script": "bench/nope.py"}}, path)


def test_the_code_hash_follows_the_code(tmp_path: Path) -> None:
    extra = tmp_path / "bench" / "x.py"
    extra.parent.mkdir()
    extra.write_text("a = 1\n")
    first = source_hash([extra])
    assert source_hash([extra]) == first and source_hash() != first
    extra.write_text("a = 2\n")
    assert source_hash([extra]) != first


def test_the_readme_generator_refuses_stale_results(bench, tmp_path: Path) -> None:
    _, record, readme_assets = bench
    prov = record.provenance(BENCH / "compare.py", data="mr", seeds=[0], chosen_on="val", reported_on="test", threads=2)
    stale = tmp_path / "compare_mr.json"
    stale.write_text(json.dumps({"rows": {}, "provenance": prov | {"code_hash": "f" * 16, "commit": "abc1234"}}))
    with pytest.raises(record.StaleResult, match="commit abc1234"):
        readme_assets.main(["--compare", str(stale)])
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "build.json").write_text(json.dumps({"source_hash": "f" * 16}))
    with pytest.raises(record.StaleResult, match="build.json: built by code ffff"):
        readme_assets.main([str(dist)])


def test_compute_paths_speed_is_the_median_round_with_its_range(bench) -> None:
    """Each round's ratio is reference ms / model ms; the cell is the median round, lowest and highest
    beside it, and the table writes them as `median (lowest–highest)`."""
    import compute_paths

    rounds = [
        {"float": {"1x128": 30.0}, "pkg": {"1x128": 10.0}},  # 3.0
        {"float": {"1x128": 20.0}, "pkg": {"1x128": 10.0}},  # 2.0
        {"float": {"1x128": 25.0}, "pkg": {"1x128": 20.0}},  # 1.25
    ]
    r = compute_paths._ratio_over_rounds(rounds, "float", "pkg")
    assert r == {"1x128": {"median": 2.0, "min": 1.25, "max": 3.0}}
    assert compute_paths._ratio_cell(r["1x128"]) == "2.00 (1.25–3.00)"
    assert compute_paths._ratio_over_rounds(rounds, "pkg", "pkg")["1x128"] == {"median": 1.0, "min": 1.0, "max": 1.0}
