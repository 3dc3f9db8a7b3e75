"""Atomic file and directory writes: a reader never sees a half-written file or package."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from toolchain.errors import STOP, BadInputError, WriteError, is_environment_error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it (mode 0666 less the umask).

    On any exception (an interrupt included) the temporary file is removed and `path` is as it was; a full
    disk, a read-only file system or missing permissions raise WriteError naming `path`.
    """
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` writes the file's content to the path it is given (a temporary file beside `path`); it is
    then fsynced and renamed over `path`, as atomic_write_bytes does. For writers that stream to a file
    (safetensors' save_file) rather than build the bytes in memory first."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; a package is meant to be shared
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if is_environment_error(exc):
            raise WriteError(path, exc) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def link_or_copy(src: Path | str, dst: Path | str) -> None:
    """Give `dst` the bytes of `src`: a new hard link where the file system allows one (nothing copied; safe
    because edgeq replaces its files by rename, never rewrites them in place, so a later write to either
    path leaves the other as it was), else an atomic copy (over `dst` if it exists)."""
    try:
        os.link(src, dst)
    except OSError:
        atomic_write_bytes(Path(dst), Path(src).read_bytes())


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory beside `final`; on success it replaces `final` in one rename.

    On any exception (KeyboardInterrupt and SIGTERM's Interrupted included) the staging directory is removed
    and `final`, if it existed, is left as it was, even when the exception lands between the two renames
    that swap an existing `final` out and the new one in.
    """
    final = Path(final)
    old = final.with_name(f".{final.name}.old")
    stage: Path | None = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
        os.chmod(stage, 0o777 & ~_umask())
        yield stage
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(stage, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        if old.exists() and not final.exists():  # cut between the renames: put the previous output back
            os.replace(old, final)
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        cause = exc.cause if isinstance(exc, WriteError) else exc
        if is_environment_error(cause) and _names_a_staged_path(exc, stage, final):
            raise WriteError(final, cause) from exc  # the staging directory is gone: name what the user asked for
        raise


_SET = ".outputs."  # staged_set's directories in `scratch`: _SET<token>.partial (new), _SET<token>.old (aside)


@contextlib.contextmanager
def staged_set(final: Path, scratch: Path) -> Iterator[Path]:
    """Yield an empty staging directory inside `scratch`; on success each entry written there replaces the
    entry of the same name in `final`, all of them together or none.

    For outputs that only make sense together (a build's packages, its summary and its search front): an
    exception in the body (an interrupt included) removes the staging directory and leaves `final` as it
    was, entry for entry. The swap moves every old entry aside, then every new one in, and on an exception
    midway moves both back. `scratch` must be on `final`'s file system (renames), e.g. a hidden directory
    inside it. A process killed outright during the swap (milliseconds) leaves its staging directory and the
    entries it moved aside in `scratch`; `recover_staged_sets` then completes that swap.
    Errors about the staged files name the paths in `final` they were written for.
    """
    final, scratch = Path(final), Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=scratch, prefix=_SET, suffix=".partial"))
    try:
        os.chmod(stage, 0o777 & ~_umask())
        yield stage
        STOP.check()  # a signal whose Interrupted something swallowed: publish nothing
        _swap_in(stage, final)
    except WriteError as exc:
        if not Path(exc.path).is_relative_to(stage):
            raise
        raise WriteError(_unstaged(Path(exc.path), stage, final), exc.cause) from exc
    except OSError as exc:  # a write into the staging directory that no atomic writer wrapped (a library's)
        if not (is_environment_error(exc) and exc.filename and Path(exc.filename).is_relative_to(stage)):
            raise
        raise WriteError(_unstaged(Path(exc.filename), stage, final), exc) from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _aside(stage: Path) -> Path:
    return stage.with_suffix(".old")  # created only once the staged set is complete


def _swap_in(stage: Path, final: Path) -> None:
    names = sorted(os.listdir(stage))
    aside = _aside(stage)
    aside.mkdir()
    moved_aside: list[str] = []
    moved_in: list[str] = []
    try:
        for n in names:
            if os.path.lexists(final / n):
                os.replace(final / n, aside / n)
                moved_aside.append(n)
        for n in names:
            os.replace(stage / n, final / n)
            moved_in.append(n)
    except BaseException:
        for n in reversed(moved_in):
            os.replace(final / n, stage / n)
        for n in reversed(moved_aside):
            os.replace(aside / n, final / n)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _unstaged(path: Path, stage: Path, final: Path) -> Path:
    """The path a user asked for in place of its staged copy (errors name `final/rpi5`, not the staging)."""
    return final / path.relative_to(stage)


def recover_staged_sets(final: Path, scratch: Path) -> list[str]:
    """Clean up after `staged_set`s whose process was killed outright; returns the names moved into `final`.

    A staging directory whose swap had begun (its aside directory exists, so it was complete) is swapped
    in the rest of the way: `final` ends up with the whole new set, as if the swap had finished. Any other
    staging directory (killed while being written) is removed. Call it only where no other `staged_set`
    into `final` can be running (under the build lock)."""
    final, moved = Path(final), []
    for stage in sorted(Path(scratch).glob(f"{_SET}*.partial")):
        aside = _aside(stage)
        if aside.is_dir():
            for entry in sorted(stage.iterdir()):
                if os.path.lexists(final / entry.name):  # not yet moved aside
                    os.replace(final / entry.name, aside / entry.name)
                os.replace(entry, final / entry.name)
                moved.append(entry.name)
        shutil.rmtree(stage, ignore_errors=True)
    for aside in Path(scratch).glob(f"{_SET}*.old"):
        shutil.rmtree(aside, ignore_errors=True)
    return moved


def _names_a_staged_path(exc: BaseException, stage: Path | None, final: Path) -> bool:
    """Whether `exc` is about writing the staged directory or swapping it in (or names no path, as a failed
    `write` does), rather than about some other file the body read."""
    name = exc.path if isinstance(exc, WriteError) else getattr(exc, "filename", None)
    if name is None:
        return True
    path = Path(name)
    ours = {final, final.with_name(f".{final.name}.old")} | ({stage} if stage else set())
    return path in ours or any(p in ours for p in path.parents)


def require_writable(path: Path, flag: str, *, directory: bool = True) -> None:
    """BadInputError unless this process can create or replace `path` (a directory, or a file when not
    `directory`): checked before any long work starts, without creating anything."""
    path = Path(path)
    probe = path if directory else path.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if path.exists() and path.is_dir() != directory:
        reason = "is a file, not a directory" if directory else "is a directory, not a file"
        raise BadInputError(f"{flag}: {path}: {reason}")
    if not probe.is_dir():
        raise BadInputError(f"{flag}: {path}: cannot be created: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BadInputError(f"{flag}: {path}: cannot write here: {_why_unwritable(probe)}; choose another {flag}")


def _why_unwritable(directory: Path) -> str:
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        return f"{directory} is on a read-only file system"
    st = directory.stat()
    return f"{directory} is not writable by this user (mode {st.st_mode & 0o777:o}, owner uid {st.st_uid})"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
