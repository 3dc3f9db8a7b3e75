"""Write an ONNX model atomically: one file when small, model + external data file when large.

A protobuf cannot exceed 2 GB, so models over EXTERNAL_DATA_BYTES keep their tensors in `<name>.data`
beside the graph (onnx.save with save_as_external_data); small models stay one self-contained file.
Either way a reader never sees a half-written model: files are written beside their final place and
renamed over it, the data file before the graph that points at it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from toolchain.io import atomic_write_bytes

EXTERNAL_DATA_BYTES = 1_800_000_000  # margin under protobuf's 2 GB limit


def needs_external_data(model: onnx.ModelProto) -> bool:
    return model.ByteSize() > EXTERNAL_DATA_BYTES


def check_model(model: onnx.ModelProto, path: Path | None = None) -> None:
    """onnx.checker with full_check (shape inference included); by path when the model is large."""
    if needs_external_data(model) and path is not None:
        onnx.checker.check_model(str(path), full_check=True)
    else:
        onnx.checker.check_model(model, full_check=True)


def save_onnx(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Write `model` to `path` (plus `path.data` when large); returns the files written.

    A large model's tensors are moved to external data in place (onnx.save_model does so): save last.
    """
    path = Path(path)
    if not needs_external_data(model):
        atomic_write_bytes(path, model.SerializeToString())
        return [path]
    path.parent.mkdir(parents=True, exist_ok=True)
    data_name = path.name + ".data"
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        staged = Path(tmp) / path.name
        onnx.save_model(
            model,
            staged,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=1024,
        )
        onnx.checker.check_model(str(staged), full_check=True)
        os.replace(Path(tmp) / data_name, path.parent / data_name)
        os.replace(staged, path)
    return [path, path.parent / data_name]


def files_bytes(files: list[Path]) -> int:
    return sum(Path(f).stat().st_size for f in files)
