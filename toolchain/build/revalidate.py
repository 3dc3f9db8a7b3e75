"""`edgeq validate DIR`: re-check a package on its own, with no training run at hand."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from toolchain.build.manifest import REFERENCE_LOGITS
from toolchain.build.package import verify_package
from toolchain.data import load_dataset
from toolchain.errors import BadInputError
from toolchain.profiles import DeviceProfile


def revalidate(package: Path, data: str | None = None, *, latency: bool = True):
    """sha256 of every file against the manifest (IntegrityError, exit 3), then the onnxruntime checks.

    The test documents are looked up by the manifest's test ids in `data` (default: the manifest's data
    source); fidelity is checked against the torch logits recorded at build time.
    """
    from transformers import AutoTokenizer

    from toolchain.validators import validate

    package = Path(package)
    manifest = verify_package(package)
    dataset = load_dataset(data or manifest.data_source)
    by_id = {doc_id: i for i, doc_id in enumerate(dataset.ids)}
    missing = [i for i in manifest.test_ids if i not in by_id]
    if missing:
        raise BadInputError(f"{data or manifest.data_source}: test id {missing[0]!r} of {package} is not in the data")
    if dataset.label_names != manifest.label_names:
        raise BadInputError(
            f"{data or manifest.data_source}: labels {dataset.label_names} != package's {manifest.label_names}"
        )
    test = dataset.subset([by_id[i] for i in manifest.test_ids])
    with tempfile.TemporaryDirectory() as tmp:
        return validate(
            package / "model.onnx",
            DeviceProfile.model_validate(manifest.profile),
            tokenizer=AutoTokenizer.from_pretrained(package, local_files_only=True),
            texts=test.inputs,
            labels=test.labels,
            reference_logits=np.load(package / REFERENCE_LOGITS),
            float_reference_accuracy=manifest.accuracy["float_reference"],
            latency=latency,
            max_length=manifest.tokenizer.max_length,
            report_path=Path(tmp) / "validation.json",  # the package itself stays untouched
        )
