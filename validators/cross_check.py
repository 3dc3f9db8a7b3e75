"""An independent cross-check: onnx's own ReferenceEvaluator (numpy, written from the spec) against
onnxruntime with optimizations off, on a few samples of the weights-only view (validators.weights_view).

onnx 1.23's evaluator runs INT4/UINT4/INT2/UINT2 and blocked DequantizeLinear (checked in the tests), but
implements DequantizeLinear only from opset 19: an older graph (npu_int8 is opset 13) is lifted to opset 19
with onnx.version_converter first (DequantizeLinear 13 and 19 agree on int8/uint8; the lift is recorded in
the result). When the evaluator cannot run a model, the check is skipped with its error as the recorded
reason, not silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import version_converter
from onnx.reference import ReferenceEvaluator

from toolchain.validators import runner
from toolchain.validators.result import CheckSkipped, result_dict

DEFAULT_SAMPLES = 2
DEFAULT_TOLERANCE = 1e-4
EVALUATOR_MIN_OPSET = 19  # first DequantizeLinear version onnx.reference implements


@dataclass(frozen=True)
class CrossCheckResult:
    name: str
    n_samples: int
    max_abs_diff: float  # ReferenceEvaluator vs onnxruntime (exact mode)
    top1_agreement: float
    tolerance: float
    note: str = ""

    @property
    def failures(self) -> list[str]:
        out = []
        if not self.max_abs_diff <= self.tolerance:
            out.append(
                f"cross-check: ReferenceEvaluator and onnxruntime differ by {self.max_abs_diff:.3g} "
                f"> {self.tolerance:g}"
            )
        if self.top1_agreement < 100.0:
            out.append(f"cross-check: top-1 agreement {self.top1_agreement:.1f} % < 100 %")
        return out

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def evaluator_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The model the evaluator can run: lifted to opset 19 when older, with a note saying so."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= EVALUATOR_MIN_OPSET:
        return model, ""
    lifted = version_converter.convert_version(model, EVALUATOR_MIN_OPSET)
    return lifted, f"evaluated after onnx.version_converter from opset {opset} to {EVALUATOR_MIN_OPSET}"


def cross_check(
    model: onnx.ModelProto,
    exact_session,
    tokenizer,
    texts: list[str],
    max_length: int,
    tolerance: float = DEFAULT_TOLERANCE,
) -> CrossCheckResult | CheckSkipped:
    """Run `texts` (one padded batch) through both; skipped with a reason when the evaluator cannot run."""
    feeds = runner.tokenize(tokenizer, texts, runner.input_names(exact_session), max_length)
    expected = exact_session.run(["logits"], feeds)[0]
    try:
        evaluated, note = evaluator_model(model)
        got = ReferenceEvaluator(evaluated).run(["logits"], feeds)[0]
    except Exception as exc:  # any evaluator limitation: record it rather than hide it
        return CheckSkipped(
            "cross_check",
            f"onnx.reference.ReferenceEvaluator cannot run this model: {type(exc).__name__}: {exc}",
        )
    diff = float(np.abs(got.astype(np.float64) - expected).max())
    agree = 100.0 * float(np.mean(got.argmax(-1) == expected.argmax(-1)))
    return CrossCheckResult("cross_check", len(texts), diff, agree, tolerance, note)
