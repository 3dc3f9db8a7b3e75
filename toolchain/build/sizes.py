"""Where a package's bytes go: integer weights, their scales, embeddings, the head and the remaining float
tensors."""

from __future__ import annotations

from pathlib import Path

import onnx


def size_breakdown(onnx_path: Path) -> dict[str, int]:
    """Initializer bytes of an edgeq export by role (the file adds a little graph structure on top)."""
    from toolchain.exporters.metadata import read_metadata
    from toolchain.validators.size import tensor_nbytes

    model = onnx.load(str(onnx_path), load_external_data=False)
    md = read_metadata(model)
    integers = {names[0] for names in md.layer_tensors.values()}  # listed integers, scale, zero point
    scales = {n for names in md.layer_tensors.values() for n in names[1:]}
    embeddings = set(md.embedding_tensors)
    head = {n for names in md.head_tensors.values() for n in names}
    parts = {"quantized weight integers": 0, "scales and zero points": 0, "embeddings": 0, "head": 0, "other float": 0}
    for t in model.graph.initializer:
        if t.name in integers:
            part = "quantized weight integers"
        elif t.name in scales:
            part = "scales and zero points"
        elif t.name in embeddings or "embeddings" in t.name:
            part = "embeddings"
        elif t.name in head:
            part = "head"
        else:
            part = "other float"
        parts[part] += tensor_nbytes(t)
    return parts
