"""What an exported model records about itself in `metadata_props`, written and read in one place.

A validator (or a person with Netron) can recover from the file alone which BitConfig it ships, each
layer's logical bit-width, which initializers hold each layer's integers, and how activations and the
embedding tables are quantized.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import onnx

from toolchain.bitconfig import BitConfig
from toolchain.profiles import EmbeddingQuant

PREFIX = "edgeq."


@dataclass(frozen=True)
class ExportMetadata:
    profile: str
    bit_config: BitConfig
    layer_tensors: dict[str, list[str]]  # layer -> [integers, scale, (zero point)] initializer names
    embeddings: EmbeddingQuant | None = None  # None: the tables stay float
    embedding_tensors: list[str] = field(default_factory=list)  # per table: integers, scales (, zero points)
    activations: str = "none"  # ActivationQuant: "none", "int8_static" or "int8_dynamic"
    activation_qparams: dict[str, dict] = field(default_factory=dict)  # layer -> ActivationQParams.to_dict()
    head: str = "float"  # "float" or "int8": the Linears outside the bit config
    head_tensors: dict[str, list[str]] = field(default_factory=dict)  # head layer -> [integers, scale, ...]

    @property
    def embedding_tables(self) -> list[str]:
        """The embedding modules stored as integers (each table's tensors are named `<module>.qweight`, ...)."""
        return [n.removesuffix(".qweight") for n in self.embedding_tensors if n.endswith(".qweight")]

    @property
    def layer_bits(self) -> dict[str, int]:
        return {name: lb.bits for name, lb in self.bit_config.layers.items()}


def write_metadata(model: onnx.ModelProto, md: ExportMetadata) -> None:
    """Replace any edgeq.* entries of `model.metadata_props` by `md`."""
    values = {
        "profile": md.profile,
        "bit_config": md.bit_config.model_dump_json(),
        "bit_config_digest": md.bit_config.digest(),
        "layer_bits": json.dumps(md.layer_bits),
        "layer_tensors": json.dumps(md.layer_tensors),
        "embeddings": "float" if md.embeddings is None else md.embeddings.model_dump_json(),
        "embedding_tensors": json.dumps(md.embedding_tensors),
        "activations": md.activations,
        "activation_qparams": json.dumps(md.activation_qparams),
        "head": md.head,
        "head_tensors": json.dumps(md.head_tensors),
    }
    kept = {p.key: p.value for p in model.metadata_props if not p.key.startswith(PREFIX)}
    onnx.helper.set_model_props(model, kept | {PREFIX + k: v for k, v in values.items()})


def read_metadata(model: onnx.ModelProto) -> ExportMetadata:
    """The edgeq.* entries of an exported model; KeyError names the first missing entry."""
    props = {p.key.removeprefix(PREFIX): p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
    missing = [k for k in ("profile", "bit_config", "layer_tensors") if k not in props]
    if missing:
        raise KeyError(f"metadata_props: {PREFIX}{missing[0]} is missing: not a model exported by edgeq")
    return ExportMetadata(
        profile=props["profile"],
        bit_config=BitConfig.model_validate_json(props["bit_config"]),
        layer_tensors=json.loads(props["layer_tensors"]),
        embeddings=_embedding_quant(props.get("embeddings", "float")),
        embedding_tensors=json.loads(props.get("embedding_tensors", "[]")),
        activations=props.get("activations", "none"),
        activation_qparams=json.loads(props.get("activation_qparams", "{}")),
        head=props.get("head", "float"),
        head_tensors=json.loads(props.get("head_tensors", "{}")),
    )


def _embedding_quant(value: str) -> EmbeddingQuant | None:
    """The recorded table format: "float", "int8" (files before low-bit tables) or an EmbeddingQuant's JSON."""
    if value == "float":
        return None
    if value == "int8":
        return EmbeddingQuant(bits=8)
    return EmbeddingQuant.model_validate_json(value)
