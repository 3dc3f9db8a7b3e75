"""Pareto-based configuration search: the adapter's training configurations and the best one per device.

profile -> space (allowed choices, costs, budgets) -> sensitivity -> refine (training set, during training)
        -> select (per device, after training) -> plot.
`toolchain.search.plot` is imported on its own (matplotlib).

Selection (`select_configs` and its types) is imported on first use, not with the package: training code
imports the package for the training set (refine), and the run cache hashes what training imports
(toolchain.provenance.closure_hash), so a change to per-device selection does not retrain.
"""

from __future__ import annotations

import importlib

from toolchain.search.pareto import hypervolume, pareto_indices
from toolchain.search.refine import ParetoConfigSource
from toolchain.search.scoring import ScoreCache, error_of, quant_key, rank_key, selection_key
from toolchain.search.sensitivity import Sensitivity, loss_sensitivity, weight_sensitivity
from toolchain.search.space import (
    Cost,
    Limit,
    SearchSpace,
    Variant,
    cost_of,
    require_reachable,
    smallest_cost,
)

__all__ = [
    "Cost",
    "Limit",
    "ParetoConfigSource",
    "ScoreCache",
    "SearchResult",
    "SearchSettings",
    "merge_results",
    "SearchSpace",
    "Selection",
    "Sensitivity",
    "Variant",
    "cost_of",
    "error_of",
    "hypervolume",
    "loss_sensitivity",
    "pareto_indices",
    "quant_key",
    "rank_key",
    "require_reachable",
    "select_configs",
    "selection_key",
    "smallest_cost",
    "weight_sensitivity",
]

_SELECTION = ("SearchResult", "SearchSettings", "Selection", "merge_results", "select_configs")


def __getattr__(name: str):
    if name in _SELECTION:
        return getattr(importlib.import_module("toolchain.search.select"), name)
    raise AttributeError(f"module 'toolchain.search' has no attribute {name!r}")
