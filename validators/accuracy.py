"""Task accuracy in onnxruntime on the test split, against the float model's accuracy and the profile's
tolerance (`accuracy.max_drop`, in points).

Exact mode (what the integers mean) runs on every test text. Default optimizations (what a device's
onnxruntime computes) run on the texts fidelity covers, the first rows, and are judged by what they cost
there against exact mode on the same texts: the drop is the exact mode's loss plus that cost when positive.
A full second pass would double the check's time; on the shipped profiles the two modes' accuracies were
equal on all 445 test texts (one build, every device).
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
    exact: float  # on all n_samples texts
    device: float | None  # on the first device_n_samples texts
    device_n_samples: int
    exact_on_device_texts: float | None  # exact mode on the same texts as `device`
    max_drop: float  # points

    @property
    def device_cost(self) -> float:
        """Points the default optimizations lose against exact mode on the same texts (negative: gain)."""
        if self.device is None or self.exact_on_device_texts is None:
            return 0.0
        return self.exact_on_device_texts - self.device

    @property
    def drop(self) -> float:
        return self.float_reference - self.exact + max(0.0, self.device_cost)

    @property
    def failures(self) -> list[str]:
        if self.drop <= self.max_drop:
            return []
        device = (
            "not run"
            if self.device is None
            else f"{self.device:.2f} % against exact {self.exact_on_device_texts:.2f} % on the first "
            f"{self.device_n_samples} texts"
        )
        return [
            f"accuracy: {self.drop:.2f} points below the float reference {self.float_reference:.2f} % "
            f"(exact {self.exact:.2f} % on {self.n_samples} texts; default optimizations {device}); "
            f"the profile allows {self.max_drop:g}"
        ]

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self) | {"drop": self.drop, "device_cost": self.device_cost}


def check_accuracy(
    exact: np.ndarray, device: np.ndarray | None, labels, float_reference: float, max_drop: float
) -> AccuracyResult:
    """`exact`: (N, C) logits of every text; `device`: (M, C), M <= N, of the first M (or None: not run)."""
    labels = np.asarray(labels)
    m = 0 if device is None else len(device)
    if m > len(exact):
        raise ValueError(f"{m} default-optimization rows for {len(exact)} texts")
    return AccuracyResult(
        "accuracy",
        len(labels),
        float_reference,
        accuracy(exact, labels),
        None if device is None else accuracy(device, labels[:m]),
        m,
        None if device is None else accuracy(exact[:m], labels[:m]),
        max_drop,
    )
