"""manifest.json: everything needed to use and re-check a device package without edgeq."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from toolchain.bitconfig import BitConfig
from toolchain.errors import BadInputError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REFERENCE_LOGITS = "reference_logits.npy"  # the torch twin's test-split logits, in test_ids order


class TokenizerSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_length: int
    padding: str = "longest"
    truncation: bool = True
    input_names: list[str]
    pairs: bool = False  # a sentence-pair task: each input is (text, text_pair), encoded as one sequence


class Sizes(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    bits_per_param: float | None = None  # logical bits per parameter of the whole graph (None: not measured)
    logical_bits_per_weight: float  # the searched layers only
    container_bits_per_weight: float
    quantized_weight_container_bytes: int
    file_bytes: int
    breakdown: dict[str, int]  # quantized weights, scales, embeddings, head, other float


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    edgeq_version: str
    profile: dict[str, Any]
    status: str  # "passed" | "failed"
    failures: list[str]
    model_name: str
    model_sha256: str
    data_source: str
    label_names: list[str]  # logits are in this order
    tokenizer: TokenizerSettings
    bit_config: BitConfig
    variant: dict[str, Any]  # how the weights were produced: merged integers / adapter branch, rank
    sizes: Sizes
    opset: int
    onnxruntime_version: str
    accuracy: dict[str, float | None]  # onnxruntime test accuracy per mode (and its texts), float reference, drop
    fidelity: dict[str, Any]
    latency: dict[str, Any]  # build-host figures: host, ms per model and shape, ratios to the references
    kernels: dict[str, Any] = {}  # onnxruntime's optimized graph: matrix-multiply kernels, requested path, flag
    test_ids: list[str]
    files: dict[str, str]  # relative path -> sha256, every file of the package but the manifest

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def load_manifest(package: Path) -> Manifest:
    path = Path(package) / MANIFEST
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read the package manifest: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        raise BadInputError(f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:20]) from exc
