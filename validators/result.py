"""Typed results of the validation checks and the report that collects them.

Each check returns a frozen dataclass with `name`, `failures` (empty when it passed) and `to_dict()`. A
check that cannot run records why (`CheckError`, a failure; `CheckSkipped`, not a failure) instead of
stopping the others: the report lists every failure at once and is written pass or fail.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from toolchain.errors import ValidationFailedError
from toolchain.io import atomic_write_json


class CheckResult(Protocol):
    name: str

    @property
    def failures(self) -> list[str]: ...

    def to_dict(self) -> dict[str, Any]: ...


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def result_dict(result: Any) -> dict[str, Any]:
    """asdict(result) plus its pass/fail verdict, JSON-safe."""
    return _json_safe(asdict(result) | {"passed": not result.failures, "failures": list(result.failures)})


@dataclass(frozen=True)
class CheckError:
    """A check that raised: recorded as a failure so the other checks still run."""

    name: str
    error: str

    @property
    def failures(self) -> list[str]:
        return [f"{self.name}: could not run: {self.error}"]

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


@dataclass(frozen=True)
class CheckSkipped:
    """A check not run, with the reason (not requested, or a tool that cannot run this model)."""

    name: str
    reason: str

    @property
    def failures(self) -> list[str]:
        return []

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self) | {"skipped": True}


@dataclass(frozen=True)
class ValidationReport:
    """Every check's result for one exported model against one profile."""

    model_path: str
    profile: str
    environment: dict[str, str]
    results: dict[str, Any] = field(default_factory=dict)  # check name -> CheckResult

    @property
    def failures(self) -> list[str]:
        return [f for r in self.results.values() for f in r.failures]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_path": self.model_path,
            "profile": self.profile,
            "passed": self.passed,
            "failures": self.failures,
            "environment": self.environment,
            "checks": {name: r.to_dict() for name, r in self.results.items()},
        }

    def to_json(self, path: Path) -> None:
        atomic_write_json(Path(path), self.to_dict())

    def raise_if_failed(self) -> None:
        """ValidationFailedError (exit code 3) listing every failure, when there is any."""
        if self.failures:
            raise ValidationFailedError(self.failures)
