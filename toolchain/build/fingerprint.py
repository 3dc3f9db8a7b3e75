"""Content hashes that key the cached training run: same model, data, settings and code -> same run."""

from __future__ import annotations

import hashlib
from pathlib import Path

from toolchain.data import TextDataset
from toolchain.io import sha256_file


def model_sha256(model_dir: Path) -> str:
    """Hash of a model directory's config, tokenizer and weight files (names and contents)."""
    h = hashlib.sha256()
    for p in sorted(Path(model_dir).iterdir()):
        if p.is_file() and p.suffix in {".json", ".txt", ".safetensors", ".bin", ".model"}:
            h.update(p.name.encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def dataset_sha256(ds: TextDataset) -> str:
    h = hashlib.sha256()
    h.update("\x1f".join(ds.label_names).encode())
    for doc_id, text, label in zip(ds.ids, ds.texts, ds.labels):
        h.update(f"{doc_id}\x1f{label}\x1f{text}\x1e".encode())
    if ds.groups is not None:  # the split depends on them (ungrouped data hashes as before groups existed)
        h.update("\x1d".join(ds.groups).encode())
    if ds.text_pairs is not None:  # likewise: single-text data hashes as before pairs existed
        h.update(b"\x1c" + "\x1d".join(ds.text_pairs).encode())
    return h.hexdigest()


def run_key(*parts: str) -> str:
    """16 hex digits of sha256 over `parts` (what the run depends on): any part changed, another key."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
