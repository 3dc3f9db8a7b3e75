"""Task accuracy in onnxruntime on the test split, against the float model's accuracy and the profile's
tolerance (`accuracy.max_drop`, in points).

Both modes run on every test text: exact mode (what the integers mean) and default optimizations (what a
device's onnxruntime computes: fused kernels that accumulate in another order, or in integers). The drop is
the float reference minus the lower of the two, so a package passes only if both are within tolerance.
Judging the device's arithmetic on a prefix does not work: on MR (2,114 test sentences) one of 128 texts
is 0.78 points, half of a 1.5-point tolerance, and a one-sided correction only ever adds that noise.
"""

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
    float_reference: float  # percent, on all n_samples texts
    exact: float  # optimizations off, on all n_samples texts
    device: float | None  # default optimizations, on the same texts (None: not run)
    max_drop: float  # points

    @property
    def judged(self) -> float:
        """The accuracy the tolerance is applied to: the lower of the two modes."""
        return self.exact if self.device is None else min(self.exact, self.device)

    @property
    def drop(self) -> float:
        return self.float_reference - self.judged

    @property
    def failures(self) -> list[str]:
        if self.drop <= self.max_drop:
            return []
        device = "not run" if self.device is None else f"{self.device:.2f} %"
        return [
            f"accuracy: {self.drop:.2f} points below the float reference {self.float_reference:.2f} % "
            f"on {self.n_samples} texts (optimizations off {self.exact:.2f} %, default optimizations "
            f"{device}); the profile allows {self.max_drop:g}"
        ]

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self) | {"drop": self.drop}


def check_accuracy(
    exact: np.ndarray, device: np.ndarray | None, labels, float_reference: float, max_drop: float
) -> AccuracyResult:
    """`exact`, `device`: (N, C) logits of every text in each mode (`device` None: not run)."""
    labels = np.asarray(labels)
    if device is not None and len(device) != len(exact):
        raise ValueError(f"{len(device)} default-optimization rows for {len(exact)} texts")
    return AccuracyResult(
        "accuracy",
        len(labels),
        float_reference,
        accuracy(exact, labels),
        None if device is None else accuracy(device, labels),
        max_drop,
    )
