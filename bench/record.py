"""Provenance of a benchmark result, and the check that refuses a stale one.

Every result a benchmark writes carries `provenance`: the script, the commit, a hash of the code it
measured (edgeq's sources, the device profiles, the script and the bench modules it imports), the dataset,
the seeds, and which split chose what the result compares and which split reports it. `check_current`
refuses a result whose code hash differs from the checkout's: a README block is generated only from results
of the code it describes.
"""

from __future__ import annotations

import ast
import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

from toolchain.profiles import default_profiles_dir
from toolchain.provenance import source_hash

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


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


def bench_imports(script: Path) -> set[Path]:
    """`script` and every bench module it imports, transitively."""
    seen: set[Path] = set()
    todo = [Path(script).resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            todo += [BENCH / f"{n}.py" for n in names if (BENCH / f"{n}.py").is_file()]
    return seen


def code_hash(script: Path) -> str:
    """What a result of `script` depends on: edgeq's sources, the shipped profiles, the bench code it runs."""
    profiles = sorted(default_profiles_dir().glob("*.yaml"))
    return source_hash([*profiles, *bench_imports(script)])


def provenance(
    script: str | Path, *, data: str, seeds: list[int], chosen_on: str, reported_on: str, threads: int
) -> dict:
    """The record every result carries (see the module docstring). `chosen_on`/`reported_on`: split names,
    e.g. "val"/"test"; "none" when the result chooses nothing."""
    script = Path(script).resolve()
    return {
        "script": script.relative_to(REPO).as_posix() if script.is_relative_to(REPO) else str(script),
        "commit": git_commit(REPO),
        "code_hash": code_hash(script),
        "data": data,
        "seeds": list(seeds),
        "chosen_on": chosen_on,
        "reported_on": reported_on,
        "machine": machine_info(threads),
    }


def machine_info(threads: int) -> dict:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "git_commit": git_commit(REPO),
    }


class StaleResult(SystemExit):
    """A result that was not measured by the checkout's code (or carries no provenance)."""


def check_current(result: dict, path: Path) -> dict:
    """`result`'s provenance when its code hash is the checkout's; else StaleResult naming what to rerun."""
    prov = result.get("provenance")
    if prov is None:
        raise StaleResult(f"{path}: no provenance (written before results recorded their code); run it again")
    script = REPO / prov["script"]
    if not script.is_file():
        raise StaleResult(f"{path}: its script {prov['script']} is gone from this checkout")
    now = code_hash(script)
    if prov["code_hash"] != now:
        raise StaleResult(
            f"{path}: measured by code {prov['code_hash']} (commit {prov['commit']}), the checkout's is {now}: "
            f"run `python bench/suite.py run` for {prov['script']} again before generating from it"
        )
    return prov
