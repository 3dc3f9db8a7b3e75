"""The run directory API: `train(...) -> Run` and `Run.load(run_dir)`.

A finished run directory holds everything needed to generate any covered configuration's integers on
another machine: the float fine-tuned model and tokenizer, the data (hence the same seeded split), the
quantized base, the trained adapter, and a manifest of sha256 hashes that `Run.load` verifies.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from toolchain.adapter import stages
from toolchain.adapter.base import QuantBase
from toolchain.adapter.configs import RandomConfigSource
from toolchain.adapter.distributed import Parallel
from toolchain.adapter.model import CoAModel, check_config
from toolchain.adapter.settings import Grid, TrainSettings
from toolchain.adapter.tables import TableBase, embedding_modules
from toolchain.adapter.train import TrainData, train_adapter
from toolchain.bitconfig import BitConfig
from toolchain.config_source import ConfigSource
from toolchain.data import Splits, TextDataset, split
from toolchain.errors import BadInputError, IntegrityError
from toolchain.evaluate import Metrics, metrics, predict_logits
from toolchain.integrity import file_problems
from toolchain.io import atomic_write_bytes, atomic_write_json, sha256_file
from toolchain.models import LayerSpec, quantizable_layers
from toolchain.profiles import EmbeddingQuant
from toolchain.quant.core import QuantizedWeight
from toolchain.quant.model import apply_quantized, apply_tables
from toolchain.quant.tables import quantize_table

RUN_FORMAT = 4  # 2: validation and test interleave classes (toolchain.data.split); stored logits follow
# 3: the training set is drawn around whole-model budgets (toolchain.whole_model)
# 4: embedding tables train with the adapter, in the profiles' formats (tables.safetensors)
RUN_JSON, MANIFEST = "run.json", "manifest.json"


def _manifest_files(run_dir: Path) -> list[Path]:
    fixed = [stages.SETTINGS, stages.DATA, stages.LOGITS, stages.BASE, stages.TABLES, stages.ADAPTER, RUN_JSON]
    return [run_dir / f for f in fixed] + sorted((run_dir / stages.FLOAT_DIR).iterdir())


def _write_manifest(run_dir: Path) -> None:
    files = {str(p.relative_to(run_dir)): sha256_file(p) for p in _manifest_files(run_dir)}
    atomic_write_json(run_dir / MANIFEST, {"format": RUN_FORMAT, "files": files})


def verify_manifest(run_dir: Path) -> None:
    """Each file in the manifest exists with its recorded sha256; IntegrityError names each that does not."""
    path = run_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IntegrityError([f"{path}: unreadable run manifest: {exc}"]) from exc
    if manifest.get("format") != RUN_FORMAT:
        raise BadInputError(
            f"{path}: format {manifest.get('format')!r}, this edgeq reads {RUN_FORMAT}; train the run again "
            "(`edgeq build` keys its cached runs by format and trains a new one)"
        )
    bad = file_problems(run_dir, manifest["files"], path)
    if bad:
        raise IntegrityError(bad)


def train(
    model_dir: Path | str,
    dataset: TextDataset,
    run_dir: Path | str,
    settings: TrainSettings | None = None,
    *,
    config_source: ConfigSource | None = None,
    progress: bool = True,
) -> Run:
    """Float fine-tune, quantized base, configuration-aware adapter; resumes an interrupted `run_dir`.

    `config_source` supplies the training configurations (default: RandomConfigSource over the settings'
    bits and grids). Returns the loaded, verified Run.
    """
    s, run_dir = settings or TrainSettings(), Path(run_dir)
    if (run_dir / MANIFEST).is_file():
        stages.start_run(run_dir, dataset, s)  # refuses other settings/data
        return Run.load(run_dir)
    par = Parallel.detect()  # several processes under `accelerate launch`
    with par.main_first():  # the main process runs (and writes) the float stages, the others read them
        model, tok, splits = _float_stages(Path(model_dir), dataset, run_dir, s, progress and par.is_main)
    specs = quantizable_layers(model)
    source = config_source or RandomConfigSource(specs, s.bits, s.grids)
    coa = _build_coa(run_dir, model, specs, s)
    teacher = stages.load_logits(run_dir)["train"]
    data = TrainData(splits.train, teacher, splits.val, tok, s.effective_train_length)
    timer = stages.Timer()
    train_adapter(coa, data, s, source, run_dir, progress, par)
    if par.is_main:
        timer.record(run_dir, "adapter")
        atomic_write_bytes(run_dir / stages.ADAPTER, save(coa.trainable_state()))
        sens = getattr(source, "sensitivity", None)
        _write_run_json(run_dir, s, specs, dataset.label_names, None if sens is None else sens.to_dict())
        _write_manifest(run_dir)
    par.wait()
    return Run.load(run_dir)


def _float_stages(model_dir: Path, dataset: TextDataset, run_dir: Path, s: TrainSettings, progress: bool):
    """(float fine-tuned model, tokenizer, splits), running each stage not yet in `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    stages.start_run(run_dir, dataset, s)
    splits = split(dataset, s.seed)
    stages.float_stage(run_dir, model_dir, dataset, splits.train, s, progress)
    model, tok = stages.load_float(run_dir, dataset.label_names)
    stages.logits_stage(run_dir, model, tok, splits, s)
    stages.base_stage(run_dir, model, s, progress)
    stages.tables_stage(run_dir, model, s, progress)
    return model, tok, splits


def _build_coa(run_dir: Path, model: nn.Module, specs: list[LayerSpec], s: TrainSettings) -> CoAModel:
    base = QuantBase.load(run_dir / stages.BASE, s.grids)
    tables = TableBase.load(run_dir / stages.TABLES, stages.trained_formats(s))
    with torch.random.fork_rng():  # A's init is seeded without touching the caller's RNG
        torch.manual_seed(s.seed)
        return CoAModel(model, specs, base, s, tables)


def _write_run_json(
    run_dir: Path, s: TrainSettings, specs: list[LayerSpec], label_names: list[str], sensitivity: dict | None
) -> None:
    logits = stages.load_logits(run_dir)
    ds = stages.read_dataset(run_dir / stages.DATA)
    test = split(ds, s.seed).test
    info = {
        "format": RUN_FORMAT,
        "settings_digest": s.digest(),
        "label_names": label_names,
        "specs": [vars(sp) for sp in specs],
        "float_test": metrics(logits["test"], test.labels).to_dict(),
        "timings_s": json.loads((run_dir / stages.TIMINGS).read_text()),
        "sensitivity": sensitivity,  # what the config source measured during training (None: nothing)
    }
    atomic_write_json(run_dir / RUN_JSON, info)


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
        self._deploy = copy.deepcopy(float_net)
        self._deploy.classifier.load_state_dict(coa.net.classifier.state_dict())  # the jointly trained head
        self._tables: dict[EmbeddingQuant, dict[str, QuantizedWeight]] = {}  # Run.tables, by format

    @staticmethod
    def is_complete(run_dir: Path | str) -> bool:
        return (Path(run_dir) / MANIFEST).is_file()

    @classmethod
    def load(cls, run_dir: Path | str) -> Run:
        run_dir = Path(run_dir)
        if not cls.is_complete(run_dir):
            raise BadInputError(f"{run_dir}: not a finished run (no {MANIFEST}); train it first")
        verify_manifest(run_dir)
        s = TrainSettings.model_validate_json((run_dir / stages.SETTINGS).read_text())
        info = json.loads((run_dir / RUN_JSON).read_text())
        ds = stages.read_dataset(run_dir / stages.DATA)
        model, tok = stages.load_float(run_dir, info["label_names"])
        coa = _build_coa(run_dir, model, quantizable_layers(model), s)
        try:
            state = load_file(str(run_dir / stages.ADAPTER))
        except SafetensorError as exc:
            raise IntegrityError([f"{run_dir / stages.ADAPTER}: unreadable: {exc}"]) from exc
        coa.load_trainable_state(state, str(run_dir / stages.ADAPTER))
        return cls(run_dir, s, info, split(ds, s.seed), model, tok, coa.eval(), stages.load_logits(run_dir))

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
        texts = self.splits.val.texts if rows is None else [self.splits.val.texts[i] for i in rows]
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
            out = {n: quantize_table(net.get_submodule(n).weight, table) for n in embedding_modules(net)}
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
            self.quantized_model(bit_config, rank, table), self.tokenizer, ds.texts, self.settings.max_length
        )
        return metrics(logits, ds.labels, self.float_logits(split))
