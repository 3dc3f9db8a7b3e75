"""Task data: the bundled BBC News corpus, CSV / JSONL / folder loaders, their errors, and the split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from tiny import tiny_corpus, write_tiny_corpus

from toolchain.data import TextDataset, load_dataset, split
from toolchain.errors import EXIT_BAD_INPUT, BadInputError

BBC_COUNTS = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}


@pytest.fixture(scope="module")
def bbc() -> TextDataset:
    return load_dataset("bbc-news")  # about 1 s: 2,225 small files


def test_bbc_news_counts(bbc: TextDataset) -> None:
    assert len(bbc) == 2225
    assert bbc.label_names == sorted(BBC_COUNTS)  # the corpus names its sport folder "sports"
    assert {bbc.label_names[k]: n for k, n in Counter(bbc.labels).items()} == BBC_COUNTS
    assert len(set(bbc.ids)) == 2225 and bbc.ids[0] == "business/001.txt"
    assert all(t.strip() for t in bbc.texts)
    assert load_dataset("bbc-news").ids == bbc.ids


def test_bbc_news_split_sizes_and_strata(bbc: TextDataset) -> None:
    s = split(bbc, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (1557, 223, 445)
    test_counts = Counter(bbc.label_names[y] for y in s.test.labels)
    for name, n in BBC_COUNTS.items():
        assert abs(test_counts[name] - 0.2 * n) <= 1
    # prefixes are class-balanced: the fidelity texts (128), the search's validation documents (56)
    assert sorted(Counter(s.test.labels[:128]).values()) == [25, 25, 26, 26, 26]
    assert sorted(Counter(s.val.labels[:56]).values()) == [11, 11, 11, 11, 12]


def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def test_csv_with_and_without_ids(tmp_path: Path) -> None:
    content = 'text,label\nhello there,spam\n"a, quoted, text",ham\nbye,spam\n'
    ds = load_dataset(_write(tmp_path / "d.csv", content))
    assert ds.texts == ["hello there", "a, quoted, text", "bye"]
    assert ds.label_names == ["ham", "spam"] and ds.labels == [1, 0, 1]
    assert ds.ids == ["0", "1", "2"]  # row numbers when there is no id column
    ds = load_dataset(_write(tmp_path / "e.csv", "id,label,text\nx1,b,one\nx2,a,two\n"))
    assert ds.ids == ["x1", "x2"] and ds.labels == [1, 0] and ds.texts == ["one", "two"]


def test_csv_with_byte_order_mark(tmp_path: Path) -> None:
    """Spreadsheet exports start with a UTF-8 BOM; the first column must still be called `text`."""
    ds = load_dataset(_write(tmp_path / "bom.csv", "\ufefftext,label\nhello,a\nworld,b\n"))
    assert ds.texts == ["hello", "world"]
    jsonl = '\ufeff{"text": "a", "label": 1}\n{"text": "b", "label": 2}'
    ds = load_dataset(_write(tmp_path / "bom.jsonl", jsonl))
    assert ds.texts == ["a", "b"]


def test_csv_windows_line_ends_and_quoted_newlines(tmp_path: Path) -> None:
    ds = load_dataset(_write(tmp_path / "crlf.csv", b'text,label\r\n"two\r\nlines",a\r\nb,c\r\n'))
    assert ds.texts == ["two\r\nlines", "b"] and ds.label_names == ["a", "c"]


def test_jsonl_with_and_without_ids(tmp_path: Path) -> None:
    rows = [{"text": "first", "label": "x"}, {"text": "second", "label": "y", "id": "doc-2"}]
    content = "\n".join(json.dumps(r) for r in rows) + "\n\n"  # blank lines are skipped
    ds = load_dataset(_write(tmp_path / "d.jsonl", content))
    assert ds.texts == ["first", "second"] and ds.labels == [0, 1] and ds.ids == ["0", "doc-2"]
    ds = load_dataset(_write(tmp_path / "n.jsonl", '{"text": "a", "label": 3}\n{"text": "b", "label": 7}\n'))
    assert ds.label_names == ["3", "7"]


def test_folder_format(tmp_path: Path) -> None:
    root = write_tiny_corpus(tmp_path / "corpus")
    ds = load_dataset(root)
    ref = tiny_corpus()
    assert len(ds) == 120 and ds.label_names == ["alpha", "beta", "gamma"]
    assert Counter(ds.labels) == {0: 40, 1: 40, 2: 40}
    assert ds.ids[0] == "alpha/000.txt" and ds.texts[0] == ref.texts[0]
    assert ds.source == str(root)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.csv", b"", "the dataset is empty"),
        ("header_only.csv", b"text,label\n", "the dataset is empty"),
        ("empty.jsonl", b"\n\n", "the dataset is empty"),
        ("no_label.csv", b"text,label\nhello,a\nworld,\n", "row 2: missing label"),
        ("no_label_column.csv", b"text\nhello\n", "row 1: missing label"),
        ("no_label.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b"}\n', "row 2: missing label"),
        ("no_text.jsonl", b'{"label": "x"}\n', "row 1: missing text"),
        ("empty_text.csv", b'text,label\nhello,a\n"   ",b\n', "1 empty text(s), first id '1'"),
        ("one_class.csv", b"text,label\nhello,a\nworld,a\n", "only one class ('a')"),
        ("latin1.csv", "text,label\ncaf\u00e9,a\nbar,b\n".encode("latin-1"), "not UTF-8 (byte 14)"),
        ("utf16.jsonl", '{"text": "a", "label": "x"}\n'.encode("utf-16"), "not UTF-8"),
        # a bad byte after the first read buffer: the offset is still the file's (11 + 4 * 5000 + 3)
        ("late_latin1.csv", b"text,label\n" + b"a,b\n" * 5000 + b"caf\xe9,c\n", "not UTF-8 (byte 20014)"),
        ("not_json.jsonl", b'{"text": "a", "label": "x"}\n{text: b}\n', "line 2: not JSON"),
        ("array.jsonl", b'["a", "x"]\n', "line 1: expected an object with text and label"),
        ("dup_ids.csv", b"id,text,label\n7,a,x\n7,b,y\n", "id '7' is used by 2 documents"),
        ("huge_field.csv", b"text,label\n" + b"x" * 200_000 + b",a\nb,c\n", "not valid CSV"),
        (
            "half_pairs.csv",
            b"text,text_pair,label\na,b,x\nc,,y\n",
            "row 2: missing text_pair (columns: text, label, text_pair (some rows have one",
        ),
        (
            "blank_pair.jsonl",
            b'{"text": "a", "text_pair": "b", "label": "x"}\n{"text": "c", "text_pair": " ", "label": "y"}\n',
            "1 empty text_pair(s), first id '1'",
        ),
    ],
)
def test_table_errors(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(BadInputError) as info:
        load_dataset(path)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert str(info.value).startswith(str(path)), info.value
    assert message in str(info.value)


def test_pairs_load_from_a_table_and_stay_with_their_documents(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "pairs.jsonl",
        b'{"id": "p1", "text": "a man sleeps", "text_pair": "a person rests", "label": "entailment"}\n'
        b'{"id": "p2", "text": "a dog barks", "text_pair": "a cat sleeps", "label": "contradiction"}\n',
    )
    ds = load_dataset(path)
    assert ds.is_pairs and ds.text_pairs == ["a person rests", "a cat sleeps"]
    assert ds.inputs == [("a man sleeps", "a person rests"), ("a dog barks", "a cat sleeps")]
    assert ds.subset([1]).inputs == [("a dog barks", "a cat sleeps")]
    single = load_dataset(_write(tmp_path / "single.csv", b"text,label\nhello,a\nworld,b\n"))
    assert not single.is_pairs and single.inputs == ["hello", "world"]


def test_pairs_are_tokenised_as_one_sequence_of_two_segments(tiny_model_path: Path) -> None:
    from transformers import AutoTokenizer

    from toolchain.evaluate import encode

    tok = AutoTokenizer.from_pretrained(tiny_model_path, local_files_only=True)
    enc = encode(tok, [("apple boat", "quark"), ("pear", "muon ion")])
    ids = enc["input_ids"][0].tolist()
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "apple", "boat", "[SEP]", "quark", "[SEP]"]
    assert enc["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1]
    assert enc["token_type_ids"][1].tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="mixes single texts and sentence pairs"):
        encode(tok, ["apple", ("pear", "muon")])


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no class subfolders"):
        load_dataset(tmp_path)
    (tmp_path / "only").mkdir()
    _write(tmp_path / "only" / "1.txt", "one document")
    with pytest.raises(BadInputError, match="only one class"):
        load_dataset(tmp_path)
    (tmp_path / "other").mkdir()
    _write(tmp_path / "other" / "1.txt", b"caf\xe9")
    with pytest.raises(BadInputError, match=r"other/1.txt: not UTF-8 \(byte 3\)"):
        load_dataset(tmp_path)
    _write(tmp_path / "other" / "1.txt", "  \n")
    with pytest.raises(BadInputError, match="1 empty text"):
        load_dataset(tmp_path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=f"{tmp_path / 'nope.csv'}: no such data file or directory"):
        load_dataset(tmp_path / "nope.csv")


def test_class_with_fewer_than_three_docs_cannot_split(tmp_path: Path) -> None:
    rows = "".join(f"doc {i},big\n" for i in range(10)) + "rare one,small\nrare two,small\n"
    ds = load_dataset(_write(tmp_path / "d.csv", "text,label\n" + rows))
    with pytest.raises(BadInputError, match=r"classes \['small'\] have fewer than 3 documents"):
        split(ds)


def _ids(ds: TextDataset) -> list[str]:
    return list(ds.ids)


def test_split_is_stratified_disjoint_covering(tiny_data: TextDataset) -> None:
    s = split(tiny_data, seed=0)
    train, val, test = map(_ids, (s.train, s.val, s.test))
    assert (len(train), len(val), len(test)) == (84, 12, 24)  # 70/10/20 of 120
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert sorted(train + val + test) == sorted(tiny_data.ids)
    for part, per_class in ((s.train, 28), (s.val, 4), (s.test, 8)):
        assert Counter(part.labels) == {0: per_class, 1: per_class, 2: per_class}
        by_id = dict(zip(tiny_data.ids, zip(tiny_data.texts, tiny_data.labels)))
        assert all(by_id[i] == (t, y) for i, t, y in zip(part.ids, part.texts, part.labels))
        assert part.label_names == tiny_data.label_names


def test_every_prefix_of_val_and_test_is_class_balanced(tiny_data: TextDataset) -> None:
    s = split(tiny_data, seed=0)
    position = {doc_id: i for i, doc_id in enumerate(tiny_data.ids)}
    assert [position[i] for i in s.train.ids] == sorted(position[i] for i in s.train.ids)  # dataset order
    for part in (s.val, s.test):
        for k in range(1, len(part) + 1):
            counts = Counter(part.labels[:k])
            assert max(counts.values()) - min(counts.get(c, 0) for c in range(3)) <= 1


def test_split_is_stable_under_a_seed(tiny_data: TextDataset) -> None:
    a, b = split(tiny_data, seed=3), split(tiny_data, seed=3)
    assert (_ids(a.train), _ids(a.val), _ids(a.test)) == (_ids(b.train), _ids(b.val), _ids(b.test))
    reloaded = split(tiny_corpus(), seed=3)  # a fresh load of the same data: same ids
    assert _ids(reloaded.test) == _ids(a.test)
    assert _ids(split(tiny_data, seed=4).test) != _ids(a.test)
    assert _ids(split(tiny_data, seed=0).test) != _ids(a.test)


def test_calibration_texts_take_every_class_in_turn(tiny_data: TextDataset) -> None:
    from toolchain.build.device import calibration_texts

    train = split(tiny_data, seed=0).train
    label_of = dict(zip(train.texts, train.labels))
    assert Counter(label_of[t] for t in calibration_texts(train, 6)) == {0: 2, 1: 2, 2: 2}
    assert Counter(train.labels[:6]) == {0: 6}  # the first training texts are one class
