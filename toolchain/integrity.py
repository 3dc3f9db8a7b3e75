"""Hash checks of recorded files: one answer for runs, checkpoints and packages.

Each record (a run manifest, a checkpoint's JSON, a package manifest) lists files by path relative to a
root with their sha256; `file_problems` says, for each listed file, whether it is missing or changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from toolchain.io import sha256_file


def file_problems(root: Path, expected: Mapping[str, str], record: Path) -> list[str]:
    """One line per listed file that is missing or whose sha256 differs from `record`'s; [] when all match."""
    problems = []
    for rel, digest in expected.items():
        path = Path(root) / rel
        if not path.is_file():
            problems.append(f"{path}: missing (listed in {record})")
            continue
        actual = sha256_file(path)
        if actual != digest:
            problems.append(
                f"{path}: sha256 {actual[:12]}... != {digest[:12]}... recorded in {record} (changed or truncated)"
            )
    return problems
