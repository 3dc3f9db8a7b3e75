"""`Run.load(run_dir)`: a finished, verified training run, and what it generates.

A finished run directory (toolchain.adapter.run_files) holds everything needed to generate any covered
configuration's integers on another machine: the float fine-tuned model and tokenizer, the data (hence the
same seeded split), the quantized base, the trained adapter, and a manifest of sha256 hashes and the
training code's hash that `Run.load` verifies.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from toolchain.adapter import run_files as files
from toolchain.adapter.model import CoAModel, check_config
from toolchain.adapter.settings import Grid, TrainSettings
from toolchain.bitconfig import BitConfig
from toolchain.data import Splits, split
from toolchain.errors import BadInputError, IntegrityError
from toolchain.evaluate import Metrics, metrics, predict_logits
from toolchain.models import LayerSpec, quantizable_layers, table_modules
from toolchain.profiles import EmbeddingQuant
from toolchain.quant.core import QuantizedWeight
from toolchain.quant.model import apply_quantized, apply_tables
from toolchain.quant.tables import quantize_table
from toolchain.task_head import copy_head, in_head


class Run:
    """A finished, verified training run: generate any covered configuration's integers."""

    def __init__(
        self,
        run_dir: Path,
        settings: TrainSettings,
        info: dict,
        splits: Splits,
        float_net: nn.Module,
        tokenizer,
        coa: CoAModel,
        logits: dict[str, torch.Tensor],
    ):
        self.run_dir, self.settings, self.info, self.splits = run_dir, settings, info, splits
        self.tokenizer, self.adapter_model, self._float, self._logits = tokenizer, coa, float_net, logits
        self.label_names: list[str] = list(info["label_names"])
        self.specs: list[LayerSpec] = [LayerSpec(**d) for d in info["specs"]]
        # the float model with the jointly trained head: its own head, every other parameter shared (never
        # written: apply_quantized copies it)
        shared = {id(p): p for n, p in float_net.named_parameters() if not in_head(float_net, n)}
        self._deploy = copy.deepcopy(float_net, shared)
        copy_head(coa.net, self._deploy)
        self._tables: dict[EmbeddingQuant, dict[str, QuantizedWeight]] = {}  # Run.tables, by format

    @staticmethod
    def is_complete(run_dir: Path | str) -> bool:
        return (Path(run_dir) / files.MANIFEST).is_file()

    @classmethod
    def load(cls, run_dir: Path | str) -> Run:
        run_dir = Path(run_dir)
        if not cls.is_complete(run_dir):
            raise BadInputError(f"{run_dir}: not a finished run (no {files.MANIFEST}); train it first")
        files.verify_manifest(run_dir)
        s = TrainSettings.model_validate_json((run_dir / files.SETTINGS).read_text())
        info = json.loads((run_dir / files.RUN_JSON).read_text())
        ds = files.read_dataset(run_dir / files.DATA)
        model, tok = files.load_float(run_dir, info["label_names"])
        coa = files.load_coa(run_dir, model, quantizable_layers(model), s)
        try:
            state = load_file(str(run_dir / files.ADAPTER))
        except SafetensorError as exc:
            raise IntegrityError([f"{run_dir / files.ADAPTER}: unreadable: {exc}"]) from exc
        coa.load_trainable_state(state, str(run_dir / files.ADAPTER))
        return cls(run_dir, s, info, split(ds, s.seed), model, tok, coa.eval(), files.load_logits(run_dir))

    @property
    def sensitivity(self) -> dict | None:
        """The per-layer sensitivities the training's config source measured (Sensitivity.to_dict), if any."""
        return self.info.get("sensitivity")

    @property
    def float_accuracy(self) -> float:
        """Test accuracy (%) of the float fine-tuned model."""
        return self.info["float_test"]["accuracy"]

    def float_model(self) -> nn.Module:
        """A copy of the float fine-tuned model (its own head): the reference."""
        return copy.deepcopy(self._float)

    def float_logits(self, split_name: str, rows: Sequence[int] | None = None) -> torch.Tensor:
        """Float reference logits on 'val' or 'test' (evaluation length) or 'train' (training length), on
        every document of the split or on `rows` of it. 'val' is computed when first asked for (the run
        stores train and test only: a build's search needs 56 of BBC News's 223)."""
        if split_name in self._logits:
            full = self._logits[split_name]
            return full if rows is None else full[list(rows)]
        if split_name != "val":
            raise BadInputError(f"split: {split_name!r} is not one of train, val, test")
        texts = self.splits.val.inputs if rows is None else [self.splits.val.inputs[i] for i in rows]
        out = predict_logits(self._float, self.tokenizer, texts, self.settings.max_length)
        if rows is None:
            self._logits["val"] = out
        return out

    def generate(self, bit_config: BitConfig, rank: int | None = None) -> dict[str, QuantizedWeight]:
        """Merged integers and scales of every layer for `bit_config` (no rounding after the merge); for a
        `bit_config.branch_rank` (a run trained with forward 'branch'), the frozen integers plus each layer's
        int8 branch factors."""
        return self.adapter_model.generate(bit_config, rank)

    def ptq_weights(self, bit_config: BitConfig) -> dict[str, QuantizedWeight]:
        """The quantized base for `bit_config`: MSE-clipped PTQ of the float fine-tuned weights (the baseline
        the adapter starts from; use with `float_model()`, whose head it was quantized under)."""
        check_config(self.specs, bit_config)
        base = self.adapter_model.layers[0].base
        return {
            n: base.get(n, lb.bits, Grid(scheme=lb.scheme, block_size=lb.block_size))
            for n, lb in bit_config.layers.items()
        }

    def trained_table(self, table: EmbeddingQuant) -> bool:
        """Whether the adapter trained table scales for format `table`."""
        return table in self.settings.tables

    def tables(self, table: EmbeddingQuant) -> dict[str, QuantizedWeight]:
        """Every embedding table's integers in format `table`, by module name: with the scales the adapter
        learned when the run trained that format, else quantize_table's (PTQ of the float fine-tuned table)."""
        if table in self._tables:  # once per format: quantize_table takes seconds on a 30k-row table
            return self._tables[table]
        if self.trained_table(table):
            out = self.adapter_model.generate_tables(table)
        else:
            net = self._float
            out = {n: quantize_table(net.get_submodule(n).weight, table) for n in table_modules(net)}
        self._tables[table] = out
        return out

    def quantized_model(
        self, bit_config: BitConfig, rank: int | None = None, table: EmbeddingQuant | None = None
    ) -> nn.Module:
        """The float fine-tuned model with the trained head, computing with `bit_config`'s integers and its
        embedding tables in format `table` (None: float tables)."""
        model = apply_quantized(self._deploy, self.generate(bit_config, rank))
        return model if table is None else apply_tables(model, self.tables(table))

    def score(
        self, bit_config: BitConfig, split: str = "val", rank: int | None = None, table: EmbeddingQuant | None = None
    ) -> Metrics:
        """Accuracy, macro-F1, agreement with and KL from the float model on a split ('val' or 'test'), with
        the embedding tables in format `table` (None: float)."""
        ds = {"val": self.splits.val, "test": self.splits.test}.get(split)
        if ds is None:
            raise BadInputError(f"split: {split!r} is not one of val, test")
        logits = predict_logits(
            self.quantized_model(bit_config, rank, table), self.tokenizer, ds.inputs, self.settings.max_length
        )
        return metrics(logits, ds.labels, self.float_logits(split))
