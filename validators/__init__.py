"""Validation of exported models in onnxruntime (installed as toolchain.validators).

Public entry point: `validate(...) -> ValidationReport` (fidelity, accuracy, ops and dtypes, size, latency,
ReferenceEvaluator cross-check); `report.raise_if_failed()` raises ValidationFailedError (exit code 3).
"""

from toolchain.validators.result import ValidationReport
from toolchain.validators.validate import validate

__all__ = ["ValidationReport", "validate"]
