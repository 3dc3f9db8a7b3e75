"""Per-layer, per-bit-width loss estimates from the float model's Fisher information.

If a configuration moves the weights of layer i by dW_i (its shipped, dequantized integers minus the float
fine-tuned weights), the KL divergence of the model's predictions from the float model's is, to second
order, 1/2 * sum_i dW_i^T F_i dW_i, where F is the Fisher information of the float model's predictive
distribution (the KL's Hessian at dW = 0; its gradient there is zero). With the diagonal of F this is a sum
over layers of a cost that depends on that layer's own choice only, so the allocation is a multiple-choice
knapsack (toolchain.search.knapsack) and every layer's cost at every level is computed, not extrapolated
from one probe: dW is the adapter's own merged integers at that level, which depend on the layer's own
configuration only (the configuration mapper sees one layer's format, position and type).

The diagonal is exact over the documents given, not the empirical Fisher of the labels: per document
and class c, the gradient of sqrt(p_c) * log p_c, squared and summed over c, is sum_c p_c (d log p_c / dW)^2.
A Linear layer's per-document gradient is sum_t g_t x_t^T over its tokens (output gradient g, input x),
so one forward and one backward per class give every document's gradient without a loop over documents.
Interactions between layers, the embedding tables and the head are outside the estimate; the search
measures its candidates with the real model and corrects the estimate from what it measured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from toolchain.bitconfig import BitConfig
from toolchain.quant.core import QuantizedWeight
from toolchain.search.allocate import CostTable, penalty
from toolchain.search.sensitivity import Sensitivity
from toolchain.search.space import SearchSpace, Variant, genome_of


@dataclass(frozen=True)
class LayerCosts:
    """Estimated loss increase (for "fisher": KL from the float model, nats per document) of each layer
    alone at each level of each variant, layers in spec order."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]  # each layer's module type (what a correction groups by)
    table: Mapping[Variant, Mapping[int, tuple[float, ...]]]  # variant -> bits -> cost per layer
    method: str  # "fisher" or "sensitivity"
    docs: int  # documents the estimate was computed on (0: not from data)

    @classmethod
    def from_sensitivity(cls, sens: Sensitivity, space: SearchSpace) -> LayerCosts:
        """Costs from a per-layer sensitivity's 4^-bits model (toolchain.search.allocate.penalty)."""
        values = sens.aligned(space.specs)
        table = {
            v: {b: tuple(penalty(s, b, sens.ref_bits) for s in values) for b in space.levels(v)}
            for v in space.variants()
        }
        return cls(tuple(s.name for s in space.specs), tuple(s.kind for s in space.specs), table, "sensitivity", 0)

    def rows(self, t: CostTable) -> list[list[float]]:
        """costs[layer][level] for a CostTable's layers and levels."""
        by_bits = self.table[t.variant]
        missing = [b for b in t.levels if b not in by_bits]
        if missing:
            raise ValueError(f"layer costs: variant {t.variant.label()} has no costs at bits {missing}")
        return [[by_bits[b][i] for b in t.levels] for i in range(len(self.names))]

    def per_kind(self, config: BitConfig) -> dict[str, float]:
        """The estimate of `config`, summed per module type."""
        bits, variant = _genome(config)
        out: dict[str, float] = dict.fromkeys(self.kinds, 0.0)
        for i, b in enumerate(bits):
            out[self.kinds[i]] += self.table[variant][b][i]
        return out

    def predicted(self, config: BitConfig) -> float:
        return sum(self.per_kind(config).values())

    def scaled(self, weights: Mapping[str, float]) -> LayerCosts:
        """These costs with each module type's multiplied by `weights[kind]` (a correction fitted to
        measurements)."""
        table = {
            v: {b: tuple(c * weights[k] for c, k in zip(row, self.kinds)) for b, row in levels.items()}
            for v, levels in self.table.items()
        }
        return LayerCosts(self.names, self.kinds, table, self.method, self.docs)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "docs": self.docs,
            "costs": {
                v.label(): {str(b): dict(zip(self.names, row)) for b, row in levels.items()}
                for v, levels in self.table.items()
            },
        }


def _genome(config: BitConfig) -> tuple[list[int], Variant]:
    genome = genome_of(config)
    if genome is None:
        raise ValueError("layer costs: a configuration mixing variants has no single cost row")
    return genome


def fisher_diagonal(
    model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], names: Sequence[str]
) -> tuple[dict[str, torch.Tensor], int]:
    """Sum over the documents of `batches` (tokenised inputs) of the diagonal Fisher information of each
    named Linear layer's weight, and the number of documents."""
    model.eval()
    modules = {n: model.get_submodule(n) for n in names}
    saved = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for m in modules.values():
        m.weight.requires_grad_(True)  # so the layers' outputs are in the graph (no .grad is accumulated)
    fisher = {n: torch.zeros_like(m.weight, dtype=torch.float32) for n, m in modules.items()}
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [m.register_forward_hook(_keep(n, seen)) for n, m in modules.items()]
    docs = 0
    try:
        for batch in batches:
            seen.clear()
            logp = torch.log_softmax(model(**batch).logits.float(), dim=-1)
            p = logp.detach().exp()
            outs = [seen[n][1] for n in names]
            n_classes = logp.shape[1]
            for c in range(n_classes):
                objective = (p[:, c].sqrt() * logp[:, c]).sum()
                grads = torch.autograd.grad(objective, outs, retain_graph=c < n_classes - 1)
                for n, g in zip(names, grads):
                    g = g.reshape(g.shape[0], -1, g.shape[-1]).float()  # (docs, tokens, out); a pooler: 1 token
                    per_doc = torch.einsum("bto,bti->boi", g, seen[n][0].float())
                    fisher[n] += per_doc.pow(2).sum(0)
            docs += logp.shape[0]
    finally:
        for h in hooks:
            h.remove()
        for param, flag in saved.items():
            param.requires_grad_(flag)
    return fisher, docs


def _keep(name: str, seen: dict) -> Callable:
    def hook(module, args, out):
        x = args[0]
        seen[name] = (x.detach().reshape(x.shape[0], -1, x.shape[-1]), out)

    return hook


@torch.no_grad()
def fisher_costs(
    fisher: Mapping[str, torch.Tensor],
    docs: int,
    float_weights: Mapping[str, torch.Tensor],
    space: SearchSpace,
    generate: Callable[[BitConfig], Mapping[str, QuantizedWeight]],
) -> LayerCosts:
    """LayerCosts of every layer at every level of every variant of `space`: 1/2 sum F (dW)^2 per document,
    with dW = generate(uniform configuration)[layer].dequantize() - float weight (the adapter's merged
    integers at that level)."""
    if docs <= 0:
        raise ValueError("fisher_costs: the Fisher information was computed on no documents")
    names = [s.name for s in space.specs]
    table: dict[Variant, dict[int, tuple[float, ...]]] = {}
    for v in space.variants():
        table[v] = {}
        for b in space.levels(v):
            weights = generate(space.build(b, v))
            row = []
            for n in names:
                dw = weights[n].dequantize().float() - float_weights[n].float()
                row.append(0.5 * float((fisher[n] * dw.pow(2)).sum()) / docs)
            table[v][b] = tuple(row)
    return LayerCosts(tuple(names), tuple(s.kind for s in space.specs), table, "fisher", docs)
