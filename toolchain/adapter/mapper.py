"""The configuration mapper of CoA-LoRA: one small network, shared by all layers, from a layer's
configuration (bits, granularity, scheme) plus its place in the model (block index, module type) to the
r x r matrix Q(c) between the shared low-rank factors: delta(c) = B Q(c) A.

Each field is embedded (8 dims), concatenated, then LayerNorm -> Linear -> SiLU -> Linear -> r*r, added to
the identity. The last Linear starts tiny, so Q(c) starts near I and every configuration starts with the
same plain LoRA product B A.

That is the authors' mapper (`MapperContext.OWN`): a layer's Q(c) depends on its own format and place only,
so it cannot compensate one layer's low bits in another. `MapperContext.WHOLE` adds, to every layer's row,
one more embedding: a Linear map of the bits of every layer of the model (the same vector for all rows), so
each layer's Q(c) can depend on the whole configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from toolchain.adapter.settings import Grid, MapperContext
from toolchain.bitconfig import BitConfig
from toolchain.errors import BadInputError
from toolchain.models import LayerSpec
from toolchain.quant.core import Scheme

_BITS = list(range(2, 9))
_SCHEMES = list(Scheme)
INIT_STD = 1e-3  # last-layer init: Q(c) = I + O(1e-3)


@dataclass(frozen=True)
class Vocab:
    """Index tables of each embedded field, fixed by the run's layers and covered grids."""

    block_sizes: tuple[int | None, ...]  # granularities, None (per-channel) first
    kinds: tuple[str, ...]  # module types, e.g. "attention.self.query"
    n_index: int  # transformer blocks + 1 (index 0 for layers outside any block)

    @classmethod
    def of(cls, specs: Sequence[LayerSpec], grids: Sequence[Grid]) -> Vocab:
        blocks = sorted({g.block_size for g in grids}, key=lambda b: (b is not None, b or 0))
        return cls(tuple(blocks), tuple(sorted({s.kind for s in specs})), max(s.index for s in specs) + 2)

    def features(self, specs: Sequence[LayerSpec], config: BitConfig) -> torch.Tensor:
        """(L, 5) int64: bits, granularity, scheme, block index, module type of each layer."""
        rows = []
        for s in specs:
            lb = config.layers[s.name]
            if lb.block_size not in self.block_sizes:
                covered = ", ".join("per-channel" if b is None else str(b) for b in self.block_sizes)
                raise BadInputError(
                    f"layer {s.name!r}: block_size {lb.block_size} is not covered by this run (covered: {covered})"
                )
            rows.append(
                [
                    _BITS.index(lb.bits),
                    self.block_sizes.index(lb.block_size),
                    _SCHEMES.index(lb.scheme),
                    s.index + 1,
                    self.kinds.index(s.kind),
                ]
            )
        return torch.tensor(rows, dtype=torch.long)


class ConfigMapper(nn.Module):
    """(L, 5) configuration features -> (L, r, r) matrices Q(c), near identity at init; with
    `context=WHOLE` and `n_layers` = L, each row also sees every layer's bits."""

    def __init__(
        self,
        vocab: Vocab,
        rank: int,
        embed_dim: int = 8,
        hidden: int = 64,
        *,
        context: MapperContext = MapperContext.OWN,
        n_layers: int | None = None,
    ):
        super().__init__()
        sizes = [len(_BITS), len(vocab.block_sizes), len(_SCHEMES), vocab.n_index, len(vocab.kinds)]
        self.embeds = nn.ModuleList(nn.Embedding(n, embed_dim) for n in sizes)
        width = embed_dim * len(sizes)
        self.context = context
        if context is MapperContext.WHOLE:
            if not n_layers:
                raise ValueError("a whole-configuration mapper needs n_layers")
            self.whole = nn.Linear(n_layers, embed_dim)  # bits of every layer, scaled to [0, 1]
            width += embed_dim
        self.net = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, rank * rank)
        )
        nn.init.normal_(self.net[-1].weight, std=INIT_STD)
        nn.init.zeros_(self.net[-1].bias)
        self.rank = rank
        self.register_buffer("eye", torch.eye(rank), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        parts = [emb(features[:, i]) for i, emb in enumerate(self.embeds)]
        if self.context is MapperContext.WHOLE:
            bits = features[:, 0].to(self.eye.dtype) / (len(_BITS) - 1)  # (L,) every layer's bits in [0, 1]
            parts.append(self.whole(bits).expand(len(features), -1))
        x = torch.cat(parts, dim=-1)  # (L, 5*E), or (L, 6*E) with the whole configuration
        return self.eye + self.net(x).view(-1, self.rank, self.rank)  # (L, r, r)
