"""Task accuracy in onnxruntime on the test split, against the float model's accuracy and the profile's
tolerance (`accuracy.max_drop`, in points). Both modes must stay within it: exact (what the integers mean)
and device (what default optimizations compute)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from toolchain.validators.result import result_dict


def accuracy(logits: np.ndarray, labels: list[int] | np.ndarray) -> float:
    """Percent of rows whose argmax is the label."""
    labels = np.asarray(labels)
    if len(labels) != len(logits):
        raise ValueError(f"{len(logits)} logits rows for {len(labels)} labels")
    return 100.0 * float(np.mean(logits.argmax(-1) == labels)) if len(labels) else float("nan")


@dataclass(frozen=True)
class AccuracyResult:
    name: str
    n_samples: int
    float_reference: float  # percent
    exact: float
    device: float | None
    max_drop: float  # points

    @property
    def drop(self) -> float:
        worst = min(a for a in (self.exact, self.device) if a is not None)
        return self.float_reference - worst

    @property
    def failures(self) -> list[str]:
        if self.drop <= self.max_drop:
            return []
        device = "not run" if self.device is None else f"{self.device:.2f} %"
        return [
            f"accuracy: {self.drop:.2f} points below the float reference {self.float_reference:.2f} % "
            f"(exact {self.exact:.2f} %, device {device}); the profile allows {self.max_drop:g}"
        ]

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self) | {"drop": self.drop}


def check_accuracy(
    exact: np.ndarray, device: np.ndarray | None, labels, float_reference: float, max_drop: float
) -> AccuracyResult:
    return AccuracyResult(
        "accuracy",
        len(labels),
        float_reference,
        accuracy(exact, labels),
        None if device is None else accuracy(device, labels),
        max_drop,
    )
