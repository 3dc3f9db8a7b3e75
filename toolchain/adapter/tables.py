"""Embedding tables in the configuration-aware model: their integers per table format, computed once per run
and cached (safetensors), and CoAEmbedding, the table the adapter trains PEQA-style scales of.

A table format (EmbeddingQuant) is part of what a training step and a score compute: the integers stay
those `toolchain.quant.tables.quantize_table` chose for the float fine-tuned table (frozen, as PEQA keeps
them), and each format learns its own log-scales on top. The forward rounds the learned scales to fp16,
the precision they ship in, so a format's `generate` is exactly what the trained forward computed with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from toolchain.adapter.base import grid_tensors
from toolchain.errors import BadInputError
from toolchain.io import atomic_write
from toolchain.models import table_modules
from toolchain.profiles import EmbeddingQuant
from toolchain.quant.core import QuantizedWeight, Scheme
from toolchain.quant.tables import FP16_TINY, quantize_table


def format_key(spec: EmbeddingQuant) -> str:
    """A module-name-safe key of a table format: b2_asym_b32, b8_symm_row."""
    gran = "row" if spec.block_size is None else f"b{spec.block_size}"
    return f"b{spec.bits}_{spec.scheme.value[:4]}_{gran}"


class TableBase:
    """(table module, format) -> the QuantizedWeight quantize_table gives the float fine-tuned table."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], formats: Sequence[EmbeddingQuant]):
        self._t = tensors
        self.formats = list(formats)

    def _key(self, name: str, spec: EmbeddingQuant) -> str:
        key = f"{name}|{format_key(spec)}"
        if f"{key}|q" not in self._t:
            trained = ", ".join(f.label() for f in self.formats) or "none"
            raise BadInputError(f"table {name!r}: {spec.label()} is not covered by this run (formats: {trained})")
        return key

    def scale(self, name: str, spec: EmbeddingQuant) -> torch.Tensor:
        """The (vocab, G) fp16-exact scales of one entry alone (`get` would also convert its integers)."""
        return self._t[f"{self._key(name, spec)}|s"]

    def get(self, name: str, spec: EmbeddingQuant, device: torch.device | None = None) -> QuantizedWeight:
        return entry_weight(self._t, self._key(name, spec), spec.bits, spec.scheme, spec.block_size, device)

    @classmethod
    def build(
        cls, model: nn.Module, formats: Sequence[EmbeddingQuant], on_entry: Callable[[], None] | None = None
    ) -> TableBase:
        tensors: dict[str, torch.Tensor] = {}
        for spec in formats:
            for name in table_modules(model):
                qw = quantize_table(model.get_submodule(name).weight, spec)
                tensors.update(entry_tensors(f"{name}|{format_key(spec)}", qw))
            if on_entry is not None:
                on_entry()
        return cls(tensors, formats)

    def save(self, path: Path) -> None:
        atomic_write(path, lambda tmp: save_file(self._t, str(tmp)))  # streamed: no copy in memory

    @classmethod
    def load(cls, path: Path, formats: Sequence[EmbeddingQuant]) -> TableBase:
        return cls(load_file(str(path)), formats)


def fp16_scale(scale: torch.Tensor) -> torch.Tensor:
    """`scale` rounded to the fp16 it ships as (straight-through: the gradient passes unrounded)."""
    shipped = scale.detach().clamp(min=FP16_TINY).half().float()
    return scale + (shipped - scale).detach()


class CoAEmbedding(nn.Module):
    """An embedding table that looks up float rows (`current` None) or one format's integer rows times
    its learned scales. Only the rows looked up are dequantized, as in the exported graph."""

    def __init__(self, emb: nn.Embedding, name: str, base: TableBase):
        super().__init__()
        self.name, self.base = name, base
        self.register_buffer("weight", emb.weight.detach().clone(), persistent=False)
        self.log_scales = nn.ParameterDict(
            {format_key(f): nn.Parameter(torch.zeros_like(base.scale(name, f))) for f in base.formats}
        )
        self.current: EmbeddingQuant | None = None
        self._ints: dict[str, QuantizedWeight] = {}  # format key -> integers on the model's device

    def _base(self, spec: EmbeddingQuant) -> QuantizedWeight:
        key, device = format_key(spec), self.weight.device
        if key not in self._ints or self._ints[key].q.device != device:
            self._ints[key] = self.base.get(self.name, spec, device)
        return self._ints[key]

    def _scale(self, base: QuantizedWeight, spec: EmbeddingQuant) -> torch.Tensor:
        return fp16_scale(base.scale * torch.exp(self.log_scales[format_key(spec)]))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        spec = self.current
        if spec is None:
            return nn.functional.embedding(ids, self.weight)
        base = self._base(spec)
        scale = self._scale(base, spec)[ids]  # (..., G)
        q = base.q[ids].float()  # (..., H)
        hidden, groups = q.shape[-1], scale.shape[-1]
        q = q.reshape(*ids.shape, groups, hidden // groups)
        if base.zero_point is not None:
            q = q - base.zero_point[ids].float().unsqueeze(-1)
        return (q * scale.unsqueeze(-1)).reshape(*ids.shape, hidden)

    @torch.no_grad()
    def generate(self, spec: EmbeddingQuant) -> QuantizedWeight:
        """The frozen integers of `spec` with this table's learned fp16 scales: what a package stores."""
        base = self._base(spec)
        return QuantizedWeight(
            q=base.q.cpu(),
            scale=self._scale(base, spec).cpu(),
            zero_point=None if base.zero_point is None else base.zero_point.cpu(),
            bits=base.bits,
            scheme=base.scheme,
            block_size=base.block_size,
        )


def entry_tensors(key: str, qw: QuantizedWeight) -> dict[str, torch.Tensor]:
    """`qw` as stored under `key`: integers (`|q`, int8 or uint8), scales (`|s`) and zero points (`|z`)."""
    store = torch.int8 if qw.scheme is Scheme.SYMMETRIC else torch.uint8
    return {f"{key}|q": qw.q.to(store).contiguous()} | grid_tensors(key, qw)


def entry_weight(
    tensors: Mapping[str, torch.Tensor],
    key: str,
    bits: int,
    scheme: Scheme,
    block_size: int | None,
    device: torch.device | None = None,
) -> QuantizedWeight:
    """The QuantizedWeight `entry_tensors` stored under `key` (int16 integers, on `device`)."""
    q, scale, zp = tensors[f"{key}|q"], tensors[f"{key}|s"], tensors.get(f"{key}|z")
    return QuantizedWeight(
        q=q.to(device=device, dtype=torch.int16),
        scale=scale.to(device),
        zero_point=None if zp is None else zp.to(device=device, dtype=torch.int16),
        bits=bits,
        scheme=scheme,
        block_size=block_size,
    )
