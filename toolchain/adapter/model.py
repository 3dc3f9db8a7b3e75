"""CoAModel: the float fine-tuned network with every quantizable Linear replaced by a CoALinear (and, when
the run trains table formats, every embedding table by a CoAEmbedding), plus the shared configuration
mapper. `set_config(config, rank, table)` then `forward(**inputs)` is the training-time forward of that
configuration with its embedding tables in format `table`; `generate(config, rank)` and
`generate_tables(table)` return the integers that forward computed with.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from toolchain.adapter.base import QuantBase
from toolchain.adapter.layer import CoALinear, LayerState
from toolchain.adapter.mapper import ConfigMapper, Vocab
from toolchain.adapter.settings import ForwardMode, TrainSettings
from toolchain.adapter.tables import CoAEmbedding, TableBase
from toolchain.bitconfig import BRANCH_DOWN, BRANCH_UP, BitConfig
from toolchain.errors import BadInputError
from toolchain.models import LayerSpec, table_modules
from toolchain.profiles import EmbeddingQuant
from toolchain.quant.core import QuantizedWeight
from toolchain.quant.model import check_config_layers as check_config
from toolchain.quant.model import get_module, set_module
from toolchain.task_head import in_head


class CoAModel(nn.Module):
    """Configuration-aware model: frozen float network, trainable A/B/Q(c)/scales/head."""

    def __init__(
        self,
        float_model: nn.Module,
        specs: Sequence[LayerSpec],
        base: QuantBase,
        settings: TrainSettings,
        tables: TableBase | None = None,
    ):
        super().__init__()
        self.net = copy.deepcopy(float_model).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.specs, self.rank, self.mode = list(specs), settings.rank, settings.forward
        token_tables = table_modules(self.net) if tables is not None and tables.formats else []
        self.layers: list[CoALinear] = []
        for spec in self.specs:
            layer = CoALinear(get_module(self.net, spec.name), spec, base, settings)
            set_module(self.net, spec.name, layer)
            self.layers.append(layer)
        self.tables: list[CoAEmbedding] = []
        for name in token_tables:  # asked of the float model, before its Linears change
            emb = CoAEmbedding(self.net.get_submodule(name), name, tables)
            set_module(self.net, name, emb)
            self.tables.append(emb)
        for name, p in self.net.named_parameters():
            if in_head(self.net, name):
                p.requires_grad_(True)  # the task head trains jointly
        self.vocab = Vocab.of(self.specs, settings.grids)
        self.mapper = ConfigMapper(
            self.vocab,
            settings.rank,
            settings.embed_dim,
            settings.mapper_hidden,
            context=settings.mapper_context,
            n_layers=len(self.specs),
        )
        self.configured = settings.mapper  # False: Q(c) = I, the mapper never trains (Shared-LoRA)
        for p in self.mapper.parameters():
            p.requires_grad_(self.configured)

    def _rank(self, rank: int | None) -> int:
        rank = self.rank if rank is None else rank
        if not 1 <= rank <= self.rank:
            raise BadInputError(f"rank: {rank} is not in 1..{self.rank} (the run's trained rank)")
        return rank

    def set_config(self, config: BitConfig, rank: int | None = None, table: EmbeddingQuant | None = None) -> None:
        """Make the next forward compute `config`'s merged integers at `rank` (None: the full rank), with the
        embedding tables in format `table` (None: float tables)."""
        check_config(self.specs, config)
        if table is not None and not self.tables:
            raise BadInputError(f"embeddings: {table.label()}: this run trained no table formats")
        for emb in self.tables:
            emb.current = table
        rank = self._rank(rank)
        features = self.vocab.features(self.specs, config).to(self.device)  # also checks the grids are covered
        qs = self.mapper(features) if self.configured else self.mapper.eye.expand(len(self.specs), -1, -1)  # (L, r, r)
        for layer, spec, q in zip(self.layers, self.specs, qs):
            layer.current = LayerState(config.layers[spec.name], q, rank)

    @property
    def device(self) -> torch.device:
        return self.mapper.eye.device

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.net(**{k: v.to(self.device) for k, v in inputs.items()}).logits

    @torch.no_grad()
    def generate(self, config: BitConfig, rank: int | None = None) -> dict[str, QuantizedWeight]:
        """Each layer's integers and scales for `config` (merged, no rounding after the merge); with a
        `config.branch_rank`, the frozen integers and each layer's int8 branch factors (`generate_branch`)."""
        if config.branch_rank is not None:
            if rank not in (None, config.branch_rank):
                raise BadInputError(f"rank: {rank}, but the configuration's branch_rank is {config.branch_rank}")
            return self.generate_branch(config)
        self.set_config(config, rank)
        return {layer.spec.name: layer.generate(layer.current) for layer in self.layers}

    @torch.no_grad()
    def generate_tables(self, table: EmbeddingQuant) -> dict[str, QuantizedWeight]:
        """Every embedding table's integers and learned fp16 scales in format `table`, by module name."""
        return {emb.name: emb.generate(table) for emb in self.tables}

    @torch.no_grad()
    def generate_branch(self, config: BitConfig) -> dict[str, QuantizedWeight]:
        """Base integers with learned scales, plus `<layer>.branch.down` / `.up` int8 factors of rank
        `config.branch_rank` (the nested first components): what an adapter-branch package ships."""
        if self.mode is not ForwardMode.BRANCH:
            raise BadInputError(
                f"bit config: branch_rank {config.branch_rank}: this run trained merged integers (forward "
                "'merged'); an adapter branch needs a run trained with forward 'branch'"
            )
        self.set_config(config, config.branch_rank)
        out: dict[str, QuantizedWeight] = {}
        for layer in self.layers:
            name = layer.spec.name
            out[name], out[name + BRANCH_DOWN], out[name + BRANCH_UP] = layer.generate_branch(layer.current)
        return out

    def param_groups(self, settings: TrainSettings) -> list[dict]:
        scales = [p for n, p in self.named_parameters() if ".log_scales." in n]
        ids = {id(p) for p in scales}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": rest, "lr": settings.lr}, {"params": scales, "lr": settings.scale_lr}]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Everything training changes: A, B, log-scales, mapper, head (what a checkpoint stores)."""
        return {n: p.detach().cpu().clone().contiguous() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        own = dict(self.named_parameters())
        wanted = {n for n, p in own.items() if p.requires_grad}
        missing, extra = sorted(wanted - state.keys()), sorted(state.keys() - wanted)
        if missing or extra:
            raise BadInputError(
                f"{source}: adapter tensors do not match the run (missing {missing[:3]}, unexpected {extra[:3]})"
            )
        with torch.no_grad():
            for n in wanted:
                own[n].copy_(state[n])
