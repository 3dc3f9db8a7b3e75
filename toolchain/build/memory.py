"""Peak resident memory of the build, stage by stage.

On Linux the kernel's high-water mark (VmHWM) can be reset (`/proc/self/clear_refs`, value 5), so each stage
reports its own peak. Elsewhere the peak is the process's since it started (`resource.getrusage`), which
only grows: a stage's number is then the peak of it and of every stage before it.
"""

from __future__ import annotations

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


@contextmanager
def stage_peak(record: dict, stage: str) -> Iterator[None]:
    """Record the stage's peak resident memory in MB as record["peak_rss_mb"][stage], and under
    record["peak_rss_scope"] whether it is the stage's own ("stage") or the process's so far ("process")."""
    own = _reset_peak()
    try:
        yield
    finally:
        record.setdefault("peak_rss_mb", {})[stage] = round(_peak_bytes() / MB, 1)
        record["peak_rss_scope"] = "stage" if own else "process"
