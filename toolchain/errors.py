"""Typed errors and the CLI exit codes they map to.

Exit codes (documented in the README): 0 ok, 1 internal error, 2 bad input (an unusable output location or a
full disk included), 3 validation failed, 130 interrupted by SIGINT, 143 terminated by SIGTERM, 129 hung up by
SIGHUP (each 128 + the signal number, as a shell reports a process the signal killed).
"""

from __future__ import annotations

import errno
import signal
from collections.abc import Iterable

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_VALIDATION_FAILED = 3
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143
EXIT_HUNG_UP = 129  # 128 + SIGHUP (POSIX; Windows has no SIGHUP)

# OSError numbers that describe the machine, not a bug: full disk or quota, read-only file system, permissions,
# a failing device, a path that cannot exist. The CLI reports these as bad input (exit 2), without a traceback.
ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EIO,
        errno.ENOTDIR,
        errno.ENAMETOOLONG,
    }
)


def is_environment_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


def describe_os_error(exc: OSError) -> str:
    """'No space left on device [ENOSPC]': the reason without Python's repr of the path."""
    name = errno.errorcode.get(exc.errno or 0, "")
    reason = exc.strerror or str(exc)
    return f"{reason} [{name}]" if name else reason


class EdgeqError(Exception):
    """Base class of every error edgeq reports to a user; `exit_code` is what the CLI returns."""

    exit_code = EXIT_INTERNAL


class BadInputError(EdgeqError):
    """The user's input (profile, model, data, config file, CLI flag) cannot be used.

    `problems` holds one line per problem so that a caller sees all of them at once, each naming the
    file, the field, the bad value and what is allowed.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, problems: str | Iterable[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ValidationFailedError(EdgeqError):
    """An exported model did not meet its device profile (fidelity, accuracy, ops or size)."""

    exit_code = EXIT_VALIDATION_FAILED

    def __init__(self, failures: Iterable[str]):
        self.failures = list(failures)
        super().__init__("\n".join(self.failures))


class IntegrityError(ValidationFailedError):
    """A file of a run directory or package does not match the hash recorded for it."""


class WriteError(EdgeqError):
    """A file could not be written (disk full, read-only or unwritable location, I/O error).

    The machine's state, not a bug: exit 2. Raised by the atomic writers after removing their temporary file,
    so the target is as it was before the write.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, path: object, cause: OSError):
        self.path, self.cause = path, cause
        super().__init__(f"{path}: cannot write: {describe_os_error(cause)}; it was left as it was before")


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived. Unwinds like Ctrl-C (a BaseException, so `except Exception` does not swallow
    it and every staging directory and temporary file is removed on the way out); exit code 128 + signal."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequest:
    """The terminal signal that arrived while a command ran (`signum`, None if none), kept after the
    Interrupted its handler raised is gone: that exception can land where it does not unwind the stack (in a
    destructor, where it is discarded) or be turned into another error by an extension it passes through
    (safetensors reports a ValueError). `check()` raises it again; the CLI treats any failure after a signal
    as the interruption."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def check(self) -> None:
        """Raise Interrupted if a terminal signal arrived (before publishing anything, say)."""
        if self.signum is not None:
            raise Interrupted(self.signum)


STOP = StopRequest()  # process-wide, as signals are; set by toolchain.cli.signals_interrupt
