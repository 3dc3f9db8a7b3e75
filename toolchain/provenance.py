"""What code produced a result: a hash of edgeq's own source files, and a hash of the modules one result
depends on.

A build records the source hash in build.json, and every benchmark result records it with the git commit
(bench/record.py), so that a table generated from a result can refuse one measured by other code. A
training run records the hash of its training code's import closure (`closure_hash`), so that a changed
edgeq trains again instead of reusing integers that older code computed.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path

PACKAGES = ("toolchain", "toolchain.exporters", "toolchain.validators")  # edgeq's code


def source_files() -> list[Path]:
    """Every Python file of the installed toolchain, toolchain.exporters and toolchain.validators."""
    roots = {Path(importlib.util.find_spec(name).origin).parent for name in PACKAGES}
    return sorted({p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts})


def source_hash(extra: Iterable[Path] = ()) -> str:
    """sha256 (first 16 hex digits) over the source files' names and bytes, plus `extra` files'. Paths are
    taken relative to their package root, so two checkouts of the same code in other folders agree."""
    return _files_hash([*source_files(), *extra])


def closure_hash(modules: Iterable[str]) -> str:
    """sha256 (first 16 hex digits) over the files of `modules` and of every toolchain module they import,
    at any depth (`import_closure`): a change to any of them changes the hash, a change elsewhere does not."""
    return _files_hash(import_closure(tuple(modules)))


@functools.cache
def import_closure(modules: tuple[str, ...]) -> tuple[Path, ...]:
    """The source files of `modules` and of every toolchain module they import, transitively: imports
    anywhere in a file (a function-level import runs too), each module with its packages' __init__ files."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen or not (name == "toolchain" or name.startswith("toolchain.")):
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"{name}: not an importable toolchain module")
        seen[name] = path = Path(spec.origin)
        todo += _parents(name) + _imported(path)
    return tuple(sorted(seen.values()))


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imported(path: Path) -> list[str]:
    """Module names `path` imports: `import a.b` gives a.b; `from a import b` gives a, and a.b when b is a
    module (find_spec on a non-module name finds nothing)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")]
    return names


def _is_module(name: str) -> bool:
    try:
        return name.startswith("toolchain.") and importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _files_hash(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted((Path(p) for p in paths), key=_stable_name):  # the same order in any folder
        h.update(_stable_name(path).encode() + b"\0" + _source_bytes(path) + b"\0")
    return h.hexdigest()[:16]


def _source_bytes(path: Path) -> bytes:
    return path.read_bytes()


def _stable_name(path: Path) -> str:
    parts = path.resolve().parts
    for anchor in ("toolchain", "exporters", "validators", "bench", "device_profiles"):
        if anchor in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(anchor) :])
    return path.name
