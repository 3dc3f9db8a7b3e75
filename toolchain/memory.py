"""Peak resident memory of the build, stage by stage, and freed memory handed back between stages.

On Linux the kernel's high-water mark (VmHWM) can be reset (`/proc/self/clear_refs`, value 5), so each stage
reports its own peak. Elsewhere the peak is the process's since it started (`resource.getrusage`), which
only grows: a stage's number is then the peak of it and of every stage before it.

glibc keeps the memory of freed tensors in its heap for reuse rather than returning it: after a training
step on MiniLM, 0.9 GB of a 2.2 GB resident set was free heap, and the next stage started on top of it.
`release_freed` collects garbage and asks glibc to return its free heap (`malloc_trim`), so each stage
starts from what is still alive. Elsewhere (macOS, musl) it only collects garbage.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")
MB = 1_000_000


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def trim_heap() -> None:
    """Return the C heap's free memory to the system (glibc; a no-op elsewhere). Cheap (milliseconds):
    a loop that frees large temporaries between results it keeps calls it per round, since glibc reuses
    the freed temporaries' pages around the kept results instead of returning them."""
    if (trim := _malloc_trim()) is not None:
        trim(0)


def release_freed() -> None:
    """Collect garbage and return the C heap's free memory to the system (glibc)."""
    gc.collect()
    trim_heap()


@contextmanager
def stage_peak(record: dict, stage: str) -> Iterator[None]:
    """Record the stage's peak resident memory in MB as record["peak_rss_mb"][stage], and under
    record["peak_rss_scope"] whether it is the stage's own ("stage") or the process's so far ("process").
    The stage starts from what is alive (`release_freed`)."""
    release_freed()
    own = _reset_peak()
    try:
        yield
    finally:
        record.setdefault("peak_rss_mb", {})[stage] = round(_peak_bytes() / MB, 1)
        record["peak_rss_scope"] = "stage" if own else "process"
