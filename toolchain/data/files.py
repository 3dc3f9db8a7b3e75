"""The user's own data: a CSV or JSONL table, or a folder with one subfolder of *.txt files per class."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from toolchain.data.dataset import Record, TextDataset, from_records
from toolchain.errors import BadInputError

OPTIONAL_COLUMNS = ("group", "text_pair")  # when one row has it, every row needs it


def read_text(path: Path, fallback: str | None) -> str:
    raw = path.read_bytes()  # decoded whole, so an error's byte offset is the file's
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if fallback is None:
            raise BadInputError(f"{path}: not UTF-8 (byte {exc.start}); re-encode the file as UTF-8") from exc
        text = raw.decode(fallback)
    return text.removeprefix("\ufeff")  # spreadsheet exports start with a byte order mark


def load_folder(root: Path, fallback_encoding: str | None = None) -> TextDataset:
    """One subfolder per class, one document per *.txt file."""
    root = Path(root)
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise BadInputError(f"{root}: no class subfolders (expected {root}/<class>/*.txt)")
    records = [
        Record(f"{c.name}/{f.name}", read_text(f, fallback_encoding).strip(), c.name)
        for c in classes
        for f in sorted(c.glob("*.txt"))
    ]
    return from_records(records, str(root))


def _rows_csv(path: Path, text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        return list(reader)
    except csv.Error as exc:
        raise BadInputError(f"{path}: not valid CSV: {exc}") from exc


def _rows_jsonl(path: Path, text: str) -> list[dict]:
    rows = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInputError(f"{path}: line {n}: not JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise BadInputError(f"{path}: line {n}: expected an object with text and label")
            rows.append(row)
    return rows


def load_table(path: Path) -> TextDataset:
    """CSV or JSONL with `text` and `label` columns, an optional `id`, an optional `group` (documents of one
    group, one speech, one author, one product, all go to the same split) and an optional `text_pair` (a
    sentence-pair task: the model reads `text` and `text_pair` together)."""
    path = Path(path)
    reader = _rows_jsonl if path.suffix.lower() in {".jsonl", ".json"} else _rows_csv
    rows = reader(path, read_text(path, None))
    optional = [k for k in OPTIONAL_COLUMNS if any(row.get(k) not in (None, "") for row in rows)]
    records = []
    for n, row in enumerate(rows):
        missing = [k for k in ("text", "label", *optional) if row.get(k) in (None, "")]
        if missing:
            columns = ", ".join(
                ["text", "label", *(f"{k} (some rows have one, so every row needs one)" for k in optional)]
            )
            raise BadInputError(f"{path}: row {n + 1}: missing {' and '.join(missing)} (columns: {columns})")
        group = str(row["group"]) if "group" in optional else None
        pair = str(row["text_pair"]) if "text_pair" in optional else None
        records.append(Record(str(row.get("id") or n), str(row["text"]), str(row["label"]), group, pair))
    return from_records(records, str(path))
