"""Typed errors and the CLI exit codes they map to.

Exit codes (documented in the README): 0 ok, 1 internal error, 2 bad input, 3 validation failed.
"""

from __future__ import annotations

from collections.abc import Iterable

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_VALIDATION_FAILED = 3


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
