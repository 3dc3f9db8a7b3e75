"""What code produced a result: a hash of edgeq's own source files, and the git commit of a checkout.

A build records the source hash in build.json, and every benchmark result records both (bench/record.py),
so that a table generated from a result can refuse one measured by other code than the checkout's.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable
from pathlib import Path

import toolchain
import toolchain.exporters
import toolchain.validators


def source_files() -> list[Path]:
    """Every Python file of the installed toolchain, toolchain.exporters and toolchain.validators."""
    roots = {Path(m.__file__).parent for m in (toolchain, toolchain.exporters, toolchain.validators)}
    return sorted({p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts})


def source_hash(extra: Iterable[Path] = ()) -> str:
    """sha256 (first 16 hex digits) over the source files' names and bytes, plus `extra` files'. Paths are
    taken relative to their package root, so two checkouts of the same code in other folders agree."""
    h = hashlib.sha256()
    for path in [*source_files(), *sorted(Path(p) for p in extra)]:
        h.update(_stable_name(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _stable_name(path: Path) -> str:
    parts = path.resolve().parts
    for anchor in ("toolchain", "exporters", "validators", "bench", "device_profiles"):
        if anchor in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(anchor) :])
    return path.name


def _git(where: Path, *args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=where).stdout.strip()


def git_commit(where: Path) -> str | None:
    """The short commit of the checkout holding `where`, with "+dirty" when its tracked files differ from it;
    None outside a checkout."""
    try:
        commit = _git(where, "rev-parse", "--short", "HEAD")
        dirty = _git(where, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")
