"""The named benchmark corpora (MR, State of the Union eras) and grouped splits, on archives built here in
the registries' layouts: no registry is asked for anything."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from toolchain.data import load_dataset, split
from toolchain.data.corpora import MR_FILE, MR_INNER, era_of, parse_mr, parse_sotu_era, passages
from toolchain.errors import BadInputError


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def mr_archive(path: Path, lines: list[str]) -> Path:
    """A vaderSentiment-style source archive: the ratings file in a tarball inside the tarball."""
    truth = "\r\n".join(lines).encode("utf-8")  # the real file has Windows line ends
    inner = _tar_gz({MR_FILE: truth, "hutto_ICWSM_2014/tweets_GroundTruth.txt": b"1\t1.0\tnot a movie\r\n"})
    path.write_bytes(_tar_gz({f"vaderSentiment-3.3.2/{MR_INNER}": inner, "vaderSentiment-3.3.2/setup.py": b""}))
    return path


def sotu_archive(path: Path, speeches: dict[str, tuple[int, int]]) -> Path:
    """An npm-pack-style archive: package/data/<speech>.json with year and text (`words` numbered words)."""
    members = {}
    for stem, (year, words) in speeches.items():
        text = " ".join(f"{stem}-w{k}" for k in range(words))
        doc = {"year": year, "name": stem, "party": "none", "text": text}
        members[f"package/data/{stem}.json"] = json.dumps(doc).encode()
        members[f"package/data/{stem}.txt"] = text.encode()  # the real package ships both
    members["package/package.json"] = b"{}"
    path.write_bytes(_tar_gz(members))
    return path


def test_mr_labels_are_the_rating_sign_and_zero_is_dropped(tmp_path: Path) -> None:
    lines = ["1\t2.26666666667\tA splash.", "2\t-0.6\tEffective but too tepid biopic", "3\t0.0\tNeither.",
             "4\t0.0666\t  Barely positive  ", ""]  # fmt: skip
    ds = parse_mr(mr_archive(tmp_path / "v.tar.gz", lines))
    assert ds.ids == ["1", "2", "4"]
    assert [ds.label_names[y] for y in ds.labels] == ["positive", "negative", "positive"]
    assert ds.texts == ["A splash.", "Effective but too tepid biopic", "Barely positive"]
    assert ds.source == "mr" and ds.groups is None


@pytest.mark.parametrize(
    ("lines", "message"),
    [(["1\tgood\tA splash."], "line 1: expected id<TAB>rating<TAB>text"), (["1\t2.0"], "line 1: expected")],
)
def test_mr_bad_lines_name_the_line(tmp_path: Path, lines: list[str], message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        parse_mr(mr_archive(tmp_path / "v.tar.gz", lines))


def test_mr_archive_without_the_data_names_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "wheel-like.tar.gz"
    path.write_bytes(_tar_gz({"vaderSentiment-3.3.2/setup.py": b""}))
    with pytest.raises(BadInputError, match=f"expected one '{MR_INNER}' inside, found 0"):
        parse_mr(path)
    path.write_bytes(b"not a tarball")
    with pytest.raises(BadInputError, match="not the vaderSentiment source archive"):
        parse_mr(path)


@pytest.mark.parametrize(
    ("year", "era"),
    [(1790, "1790-1860"), (1860, "1790-1860"), (1861, "1861-1932"), (1932, "1861-1932"), (1933, "1933-1980"),
     (1980, "1933-1980"), (1981, "1981-present"), (2021, "1981-present")],
)  # fmt: skip
def test_era_boundaries(year: int, era: str) -> None:
    assert era_of(year) == era


def test_passages_keep_a_tail_of_half_a_passage_or_more() -> None:
    words = " ".join(str(k) for k in range(250))
    assert [len(p.split()) for p in passages(words, 100)] == [100, 100, 50]  # 50-word tail: kept
    assert [len(p.split()) for p in passages(words, 120)] == [120, 120]  # 10-word tail: dropped
    assert passages(words, 120)[1].split()[0] == "120"
    assert passages("a  b\n\tc", 2) == ["a b", "c"]  # whitespace normalised; 1 of 2 words is half


def test_sotu_passages_are_labelled_by_era_and_grouped_by_speech(tmp_path: Path) -> None:
    speeches = {
        "1790_a_n": (1790, 250),
        "1861_b_r": (1861, 120),
        "1950_c_d": (1950, 59),
        "1951_e_d": (1951, 70),
        "2001_d_r": (2001, 300),
    }
    ds = parse_sotu_era(sotu_archive(tmp_path / "s.tgz", speeches))
    assert ds.label_names == ["1790-1860", "1861-1932", "1933-1980", "1981-present"]
    # 250 words: 2 passages (10-word tail dropped); 120: 1; 59: none (under half); 70: 1; 300: 3 (60 kept)
    assert ds.ids == ["1790_a_n/000", "1790_a_n/001", "1861_b_r/000", "1951_e_d/000", "2001_d_r/000",
                      "2001_d_r/001", "2001_d_r/002"]  # fmt: skip
    assert ds.groups == ["1790_a_n", "1790_a_n", "1861_b_r", "1951_e_d", "2001_d_r", "2001_d_r", "2001_d_r"]
    eras = [ds.label_names[y] for y in ds.labels]
    assert eras == ["1790-1860"] * 2 + ["1861-1932", "1933-1980"] + ["1981-present"] * 3
    assert ds.texts[1].split()[0] == "1790_a_n-w120" and len(ds.texts[6].split()) == 60


def test_sotu_speech_without_a_year_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.tgz"
    path.write_bytes(_tar_gz({"package/data/x.json": b'{"text": "no year here"}'}))
    with pytest.raises(BadInputError, match=r"package/data/x.json: expected JSON with year and text"):
        parse_sotu_era(path)


def _grouped_corpus(tmp_path: Path, groups_per_class: int = 10) -> Path:
    rows = ["text,label,group"]
    for c in "abc":
        for g in range(groups_per_class):
            rows += [f"{c} doc {g} {k},{c},{c}{g}" for k in range(1 + g % 4)]  # groups of 1 to 4 documents
    path = tmp_path / "grouped.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_group_column_keeps_every_group_in_one_split(tmp_path: Path) -> None:
    ds = load_dataset(_grouped_corpus(tmp_path))
    assert ds.groups is not None and ds.groups[:3] == ["a0", "a1", "a1"]
    s = split(ds, seed=0)
    parts = [set(p.groups) for p in (s.train, s.val, s.test)]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert sorted(s.train.ids + s.val.ids + s.test.ids) == sorted(ds.ids)
    for part in (s.train, s.val, s.test):
        assert set(part.labels) == {0, 1, 2}  # stratified: every class on every side
    n = Counter(ds.labels)[0]  # 25 documents a class
    test_a = sum(1 for y in s.test.labels if y == 0)
    assert 0.2 * n <= test_a <= 0.2 * n + 4  # at least a fifth, overshooting by less than one group
    again = split(load_dataset(_grouped_corpus(tmp_path)), seed=0)
    assert again.test.ids == s.test.ids
    assert split(ds, seed=1).test.ids != s.test.ids


def test_grouped_split_needs_three_groups_a_class(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="fewer than 3 groups"):
        split(load_dataset(_grouped_corpus(tmp_path, groups_per_class=2)))


def test_a_group_column_must_be_filled_on_every_row(tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    path.write_text("text,label,group\none,a,g1\ntwo,b,\n")
    with pytest.raises(BadInputError, match=r"row 2: missing group \(columns: text, label, group"):
        load_dataset(path)


def test_an_unknown_name_lists_the_named_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError, match=r"not a dataset name \(bbc-news, mr, sotu-era\)"):
        load_dataset("imdb")


def test_a_run_keeps_its_data_groups_so_its_split_is_the_same(tmp_path: Path) -> None:
    """A run re-reads its data from its own copy: without the groups, its test split would be another one."""
    from toolchain.adapter import run_files

    ds = load_dataset(_grouped_corpus(tmp_path))
    (tmp_path / "data.json").write_text(run_files.dataset_json(ds))
    again = run_files.read_dataset(tmp_path / "data.json")
    assert again.groups == ds.groups
    assert split(again, seed=0).test.ids == split(ds, seed=0).test.ids
    ungrouped = dataclasses.replace(ds, groups=None)
    assert "groups" not in json.loads(run_files.dataset_json(ungrouped))  # the record as before groups existed
