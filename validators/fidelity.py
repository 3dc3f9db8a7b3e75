"""Fidelity: do onnxruntime's logits reproduce the torch model the export came from?

Exact mode (no graph optimizations) must match the reference within `tolerance` (max abs logit difference)
with 100 % top-1 agreement: the integers mean exactly the weights torch computed with. When the graph
quantizes activations statically, the exact comparison runs on its weights-only view (activation Q/DQ
bypassed: validators.weights_view explains why no independent implementation can match it to 1e-4), and the
full graph's exact-mode agreement is reported next to it. Device mode (default optimizations: MatMulNBits
with int8 activations) is reported too; the effect of both on the task is judged by the accuracy check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from toolchain.validators.result import result_dict

DEFAULT_TOLERANCE = 1e-4
# Texts a build computes the torch reference on (the first of the test split): the torch twin costs as
# much as an onnxruntime pass per text. Exact-mode accuracy still runs on every test text.
FIDELITY_SAMPLES = 128


@dataclass(frozen=True)
class Agreement:
    max_abs_diff: float
    top1_agreement: float  # percent of rows with the same argmax as the reference


def compare(logits: np.ndarray, reference: np.ndarray) -> Agreement:
    """Max abs difference and top-1 agreement (percent) of (N, C) logits against reference logits."""
    if logits.shape != reference.shape:
        raise ValueError(f"logits shape {logits.shape} differs from the reference's {reference.shape}")
    diff = float(np.abs(logits.astype(np.float64) - reference.astype(np.float64)).max()) if logits.size else 0.0
    agree = 100.0 * float(np.mean(logits.argmax(-1) == reference.argmax(-1))) if len(logits) else 100.0
    return Agreement(diff, agree)


@dataclass(frozen=True)
class FidelityResult:
    name: str
    n_samples: int
    tolerance: float
    exact: Agreement  # weights-only view when activation pairs were bypassed, else the full graph
    device: Agreement | None
    activation_pairs_bypassed: int = 0
    full_graph_exact: Agreement | None = None  # with static int8 activations: reported, not judged

    @property
    def failures(self) -> list[str]:
        out = []
        view = " (weights-only view)" if self.activation_pairs_bypassed else ""
        if not self.exact.max_abs_diff <= self.tolerance:
            out.append(
                f"fidelity: exact{view} max abs logit difference {self.exact.max_abs_diff:.3g} > {self.tolerance:g}"
            )
        if self.exact.top1_agreement < 100.0:
            out.append(f"fidelity: exact{view} top-1 agreement {self.exact.top1_agreement:.2f} % < 100 %")
        return out

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def check_fidelity(
    exact: np.ndarray,
    device: np.ndarray | None,
    reference: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    full_graph_exact: np.ndarray | None = None,
    activation_pairs_bypassed: int = 0,
) -> FidelityResult:
    """`exact`: logits of the weights-only view (or the full graph when it has no activation pairs)."""
    return FidelityResult(
        "fidelity",
        len(reference),
        tolerance,
        compare(exact, reference),
        None if device is None else compare(device, reference),
        activation_pairs_bypassed,
        None if full_graph_exact is None else compare(full_graph_exact, reference),
    )
