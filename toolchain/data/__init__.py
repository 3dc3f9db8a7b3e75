"""Task data, offline: a named dataset (`corpora.NAMED`), a CSV/JSONL file or a folder of class subfolders.

Every document gets a stable id (relative path or row id) so that a package can list its test documents,
and the train/validation/test split is stratified, seeded and (where documents have groups) grouped, hence
reproducible on another machine (`splits`).
"""

from __future__ import annotations

from pathlib import Path

from toolchain.data.corpora import NAMED
from toolchain.data.dataset import Record, Splits, TextDataset, from_records
from toolchain.data.files import load_folder, load_table
from toolchain.data.splits import interleave_classes, split
from toolchain.errors import BadInputError

DEFAULT_DATA = "mr"  # a benchmark on which a 1-point difference is decidable (about 2,100 test sentences)

__all__ = [
    "DEFAULT_DATA",
    "NAMED",
    "Record",
    "Splits",
    "TextDataset",
    "from_records",
    "interleave_classes",
    "load_dataset",
    "load_folder",
    "load_table",
    "split",
]


def load_dataset(path: Path | str | None = None) -> TextDataset:
    """A named dataset (None: DEFAULT_DATA), a CSV/JSONL file or a class folder."""
    name = DEFAULT_DATA if path is None else str(path)
    if name in NAMED:
        return NAMED[name]()
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: no such data file or directory, and not a dataset name ({', '.join(NAMED)})")
    try:
        return load_folder(path) if path.is_dir() else load_table(path)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
