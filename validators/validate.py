"""validate: run every check of an exported model against its device profile and write the report.

Every check runs even when another fails or cannot run; the report (JSON) is written pass or fail, and
raising is the caller's choice (`report.raise_if_failed()` -> ValidationFailedError, exit code 3).
Reference logits and the float accuracy come from the caller (computed in torch on the torch twin of the
export, `toolchain.exporters.twin_of`), so validation never imports training code. Accuracy runs on every
text in both modes (validators.accuracy says how they are judged); fidelity on the texts the reference
covers, its first rows (a build computes FIDELITY_SAMPLES). With
static int8 activations, the exact comparison runs on the weights-only view (validators.weights_view says why).
"""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from toolchain.evaluate import DEFAULT_MAX_LENGTH
from toolchain.exporters.metadata import read_metadata
from toolchain.profiles import DeviceProfile
from toolchain.validators import runner
from toolchain.validators.accuracy import check_accuracy
from toolchain.validators.cross_check import DEFAULT_SAMPLES, cross_check
from toolchain.validators.fidelity import DEFAULT_TOLERANCE, check_fidelity
from toolchain.validators.kernels import check_kernels, layers_on_path
from toolchain.validators.latency import DYNAMIC_INT8, FLOAT, SHAPES, dynamic_int8_reference, measure_latency
from toolchain.validators.ops import check_ops
from toolchain.validators.result import CheckError, CheckSkipped, ValidationReport, result_dict
from toolchain.validators.size import check_size
from toolchain.validators.weights_view import weights_only_view

REPORT_NAME = "validation.json"


@dataclass(frozen=True)
class ProfileMatch:
    """The model was exported for the profile it is validated against."""

    name: str
    exported_for: str
    validated_against: str

    @property
    def failures(self) -> list[str]:
        if self.exported_for == self.validated_against:
            return []
        return [
            f"profile: the model was exported for {self.exported_for!r}, validated against {self.validated_against!r}"
        ]

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def environment() -> dict[str, str]:
    return {
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "threads": str(runner.THREADS),
    }


def _guard(name: str, check: Callable[[], Any]) -> Any:
    """Run one check; an exception becomes a recorded failure instead of stopping the others."""
    try:
        return check()
    except Exception as exc:  # recorded in the report with its type and message
        return CheckError(name, f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class _Inputs:
    """The caller's evaluation data, handed to the runtime checks."""

    tokenizer: Any
    texts: list[str]
    labels: list[int]
    reference_logits: np.ndarray
    float_reference_accuracy: float
    max_length: int
    tolerance: float
    cross_check_samples: int

    @property
    def fidelity_texts(self) -> list[str]:
        """The texts the reference logits cover: its first rows."""
        return self.texts[: len(self.reference_logits)]


@dataclass(frozen=True)
class _Runs:
    """Logits of one model file in every mode validation needs."""

    full_exact: np.ndarray  # the file as written, no optimizations, every text
    device: np.ndarray  # default optimizations, every text
    weights_exact: np.ndarray  # weights-only view (the file itself when it has no activation Q/DQ)
    weights_session: Any
    weights_model: onnx.ModelProto
    pairs_bypassed: int


def _run_modes(path: Path, model: onnx.ModelProto, inp: _Inputs) -> _Runs:
    def run(sess, texts):
        return runner.logits(sess, inp.tokenizer, texts, inp.max_length)

    exact_sess = runner.session(path, runner.Mode.EXACT)
    full_exact = run(exact_sess, inp.texts)
    device = run(runner.session(path, runner.Mode.DEVICE), inp.texts)
    view, n_pairs = weights_only_view(model)
    if not n_pairs:
        return _Runs(full_exact, device, full_exact, exact_sess, model, 0)
    view_sess = runner.session(view.SerializeToString(), runner.Mode.EXACT)
    return _Runs(full_exact, device, run(view_sess, inp.fidelity_texts), view_sess, view, n_pairs)


def validate(
    onnx_path: Path,
    profile: DeviceProfile,
    *,
    tokenizer,
    texts: list[str],
    labels: list[int],
    reference_logits: np.ndarray,
    float_reference_accuracy: float,
    float_onnx_path: Path | None = None,
    latency: bool = True,
    max_length: int = DEFAULT_MAX_LENGTH,
    tolerance: float = DEFAULT_TOLERANCE,
    cross_check_samples: int = DEFAULT_SAMPLES,
    latency_shapes: tuple[tuple[int, int], ...] = SHAPES,
    report_path: Path | None = None,
) -> ValidationReport:
    """Check `onnx_path` against `profile`; write the report to `report_path` (validation.json beside it).

    `reference_logits` (M, C), M <= N: the torch twin's logits on the first M of `texts`, same order
    (`toolchain.exporters.twin_of`, weights and embedding table as exported, activations in float); fidelity
    is judged on those M, accuracy on all N. `float_reference_accuracy`: the float model's accuracy on
    `texts`, in percent.
    """
    path = Path(onnx_path)
    if not 0 < len(reference_logits) <= len(texts):
        raise ValueError(f"reference_logits has {len(reference_logits)} rows; it must cover 1..{len(texts)} texts")
    inp = _Inputs(
        tokenizer,
        texts,
        labels,
        np.asarray(reference_logits),
        float_reference_accuracy,
        max_length,
        tolerance,
        cross_check_samples,
    )
    results: dict[str, Any] = {}
    model = _guard("load", lambda: onnx.load(str(path)))
    if isinstance(model, CheckError):
        results["load"] = model
    else:
        results.update(_static_checks(path, model, profile))
        results.update(_runtime_checks(path, model, profile, inp))
    results["latency"] = (
        _guard("latency", lambda: _latency(path, float_onnx_path, tokenizer, texts, latency_shapes))
        if latency
        else CheckSkipped("latency", "not requested (latency=False)")
    )
    report = ValidationReport(str(path), profile.name, environment(), results)
    report.to_json(Path(report_path) if report_path else path.parent / REPORT_NAME)
    return report


def _latency(path: Path, float_path: Path | None, tokenizer, texts: list[str], shapes) -> Any:
    """The package against the float graph and onnxruntime's quantize_dynamic of it, in one loop."""
    with tempfile.TemporaryDirectory() as tmp:
        refs = {}
        if float_path is not None:
            refs = {FLOAT: Path(float_path), DYNAMIC_INT8: dynamic_int8_reference(float_path, Path(tmp) / "qd.onnx")}
        return measure_latency(path, refs, tokenizer, texts, shapes=shapes)


def _static_checks(path: Path, model: onnx.ModelProto, profile: DeviceProfile) -> dict[str, Any]:
    md = _guard("metadata", lambda: read_metadata(model))
    out: dict[str, Any] = {"ops": _guard("ops", lambda: check_ops(model, profile))}
    if isinstance(md, CheckError):
        out["metadata"] = md
        return out
    out["profile"] = ProfileMatch("profile", md.profile, profile.name)
    out["size"] = _guard("size", lambda: check_size(path, model, md, profile))
    n_layers = layers_on_path(md, profile.activations)
    out["kernels"] = _guard("kernels", lambda: check_kernels(path, profile.activations, n_layers))
    return out


def _runtime_checks(path: Path, model: onnx.ModelProto, profile: DeviceProfile, inp: _Inputs) -> dict[str, Any]:
    runs = _guard("onnxruntime", lambda: _run_modes(path, model, inp))
    if isinstance(runs, CheckError):
        return {"fidelity": runs, "accuracy": runs}
    m = len(inp.reference_logits)
    full = runs.full_exact[:m] if runs.pairs_bypassed else None
    cross_texts = inp.texts[: inp.cross_check_samples]
    return {
        "fidelity": _guard(
            "fidelity",
            lambda: check_fidelity(
                runs.weights_exact[:m],
                runs.device[:m],
                inp.reference_logits,
                inp.tolerance,
                full_graph_exact=full,
                activation_pairs_bypassed=runs.pairs_bypassed,
            ),
        ),
        "accuracy": _guard(
            "accuracy",
            lambda: check_accuracy(
                runs.full_exact,
                runs.device,
                inp.labels,
                inp.float_reference_accuracy,
                profile.accuracy.max_drop,
            ),
        ),
        "cross_check": _guard(
            "cross_check",
            lambda: cross_check(
                runs.weights_model,
                runs.weights_session,
                inp.tokenizer,
                cross_texts,
                inp.max_length,
                inp.tolerance,
            ),
        ),
    }
