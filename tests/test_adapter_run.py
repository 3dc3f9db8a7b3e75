"""A whole tiny training run: merge exactness, nested ranks, resume, integrity of the run directory."""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from tiny import tiny_train_settings

from toolchain.adapter import (
    ConfigWeighting,
    DeltaUnits,
    Grid,
    RandomConfigSource,
    Run,
    TrainSettings,
    make_config,
    run_files,
    train,
)
from toolchain.adapter.checkpoint import latest_checkpoint
from toolchain.adapter.merge import per_weight
from toolchain.adapter.run_files import MANIFEST
from toolchain.adapter.train_loop import TrainData, distill_loss, step_plan, train_step
from toolchain.errors import BadInputError, IntegrityError
from toolchain.evaluate import encode, predict_logits
from toolchain.finetune import batch_indices
from toolchain.io import sha256_file
from toolchain.provenance import import_closure
from toolchain.quant.core import Scheme, int_range

SETTINGS = tiny_train_settings(
    refine_every=10,
    bits=[2, 3, 4, 8],
    grids=[Grid(), Grid(scheme=Scheme.ASYMMETRIC), Grid(block_size=16)],
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tiny_model_path, tiny_data, tmp_path_factory) -> Run:
    return train(tiny_model_path, tiny_data, tmp_path_factory.mktemp("run") / "r", SETTINGS, progress=False)


def _configs(run: Run, n: int = 6):
    return RandomConfigSource(run.specs, SETTINGS.bits, SETTINGS.grids, mix=0.5).sample(random.Random(7), n)


def test_float_model_learned_the_task(run):
    assert run.float_accuracy > 90


def test_generated_integer_model_equals_training_forward(run):
    inputs = encode(run.tokenizer, run.splits.test.texts, SETTINGS.max_length)
    for i, config in enumerate(_configs(run)):
        rank = 1 + i % SETTINGS.rank
        with torch.no_grad():
            run.adapter_model.set_config(config, rank)
            trained = run.adapter_model(**inputs)
            shipped = run.quantized_model(config, rank)(**inputs).logits
        assert (trained - shipped).abs().max().item() <= 1e-5
        for name, qw in run.generate(config, rank).items():
            lo, hi = int_range(config.layers[name].bits, config.layers[name].scheme)
            assert qw.q.dtype == torch.int16
            assert lo <= qw.q.min().item() and qw.q.max().item() <= hi
            assert (qw.bits, qw.scheme, qw.block_size) == (
                config.layers[name].bits,
                config.layers[name].scheme,
                config.layers[name].block_size,
            )


def test_training_moved_integers_off_the_base(run):
    config = make_config(run.specs, [2] * len(run.specs), [Grid()] * len(run.specs))
    moved = 0
    for name, qw in run.generate(config).items():
        base = run.adapter_model.layers[0].base.get(name, 2, Grid())
        moved += (qw.q != base.q).sum().item()
    assert moved > 0


def test_nested_rank_uses_only_leading_components(run):
    config = _configs(run, 1)[0]
    k = 2
    want = run.generate(config, rank=k)
    model = run.adapter_model
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith(("lora_a", "lora_b"))}
    try:
        with torch.no_grad():
            for layer in model.layers:
                layer.lora_a[k:] = 0
                layer.lora_b[:, k:] = 0
        got = run.generate(config)  # full rank, but only the first k components are non-zero
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
    for name in want:
        assert torch.equal(want[name].q, got[name].q)
    assert any(not torch.equal(want[n].q, run.generate(config)[n].q) for n in want)


def test_rank_outside_the_trained_range_is_refused(run):
    with pytest.raises(BadInputError, match="rank: 5 is not in 1..4"):
        run.generate(_configs(run, 1)[0], rank=5)


def test_score_reports_agreement_with_the_float_model(run):
    m = run.score(_configs(run, 1)[0], "test")
    assert 0 <= m.accuracy <= 100 and m.agreement is not None and m.kl is not None


def test_validation_logits_are_computed_on_the_documents_asked_for(run):
    assert "val" not in run_files.load_logits(run.run_dir)  # the run stores train and test only
    val = run.splits.val
    rows = [3, 0, 5]
    expected = predict_logits(run.float_model(), run.tokenizer, [val.texts[i] for i in rows], SETTINGS.max_length)
    assert torch.equal(run.float_logits("val", rows), expected)
    full = run.float_logits("val")
    assert full.shape == (len(val.texts), len(run.label_names))
    torch.testing.assert_close(full[rows], expected, atol=1e-5, rtol=0)  # other batches, other padding
    assert torch.equal(run.float_logits("test", rows), run.float_logits("test")[rows])
    with pytest.raises(BadInputError, match="'dev' is not one of train, val, test"):
        run.float_logits("dev")


class _Crash(RuntimeError):
    pass


class CrashingSource(RandomConfigSource):
    """The default source, except that it fails when asked for step `at`'s configurations."""

    def __init__(self, specs, at: int):
        super().__init__(specs, SETTINGS.bits, SETTINGS.grids)
        self.calls, self.at = 0, at

    def sample(self, rng, k):
        if self.calls == self.at:
            raise _Crash("simulated interruption")
        self.calls += 1
        return super().sample(rng, k)


@pytest.fixture(scope="module")
def interrupted(run, tiny_model_path, tiny_data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("interrupted") / "r"
    with pytest.raises(_Crash):
        train(
            tiny_model_path,
            tiny_data,
            run_dir,
            SETTINGS,
            config_source=CrashingSource(run.specs, 17),
            progress=False,
        )
    assert latest_checkpoint(run_dir).name == "step-000010"
    return run_dir


def test_resume_gives_identical_integers(run, interrupted, tiny_model_path, tiny_data, tmp_path):
    run_dir = tmp_path / "r"
    shutil.copytree(interrupted, run_dir)
    resumed = train(tiny_model_path, tiny_data, run_dir, SETTINGS, progress=False)
    assert sha256_file(run_dir / "adapter.safetensors") == sha256_file(run.run_dir / "adapter.safetensors")
    for config in _configs(run, 3):
        a, b = run.generate(config), resumed.generate(config)
        assert all(torch.equal(a[n].q, b[n].q) and torch.equal(a[n].scale, b[n].scale) for n in a)


def _copy_float_stage(run: Run, run_dir: Path) -> None:
    """Seed `run_dir` with `run`'s float model, logits, quantized base and data: training skips them."""
    run_files.share_float_stages(run.run_dir, run_dir)
    shutil.copy2(run.run_dir / run_files.BASE, run_dir / run_files.BASE)  # same bits and grids: the same base


def test_scale_only_training_keeps_the_base_integers(run, tiny_model_path, tiny_data, tmp_path):
    """lr=0 and no rounding residual is PEQA: the MSE-clipped integers stay, only the scales learn."""
    _copy_float_stage(run, tmp_path)
    s = TrainSettings.model_validate(SETTINGS.model_dump() | {"lr": 0.0, "residual": False, "steps": 10})
    peqa = train(tiny_model_path, tiny_data, tmp_path, s, progress=False)
    moved = 0
    for config in _configs(peqa, 3):
        got, base = peqa.generate(config), peqa.ptq_weights(config)
        assert all(torch.equal(got[n].q, base[n].q) for n in got)
        moved += sum(not torch.allclose(got[n].scale, base[n].scale) for n in got)
    assert moved > 0


def test_shared_lora_has_one_adapter_for_every_configuration(run, tiny_model_path, tiny_data, tmp_path):
    """mapper=False is Shared-LoRA: Q(c) = I for every configuration, the mapper never trains, while A and B
    do, so two configurations differ only through their grids and scales."""
    _copy_float_stage(run, tmp_path)
    s = TrainSettings.model_validate(SETTINGS.model_dump() | {"mapper": False, "steps": 10})
    shared = train(tiny_model_path, tiny_data, tmp_path, s, progress=False)
    coa = shared.adapter_model
    assert not any(n.startswith("mapper.") for n in coa.trainable_state())
    eye = torch.eye(s.rank)
    for config in _configs(shared, 2):
        coa.set_config(config)
        assert all(torch.equal(layer.current.q, eye) for layer in coa.layers)
    assert all(layer.lora_b.abs().sum() > 0 for layer in coa.layers)  # B starts at 0: the shared factors trained


def test_whole_configuration_mapper_trains_and_merges_exactly(run, tiny_model_path, tiny_data, tmp_path):
    """mapper_context=whole: the mapper's view of every layer's bits trains, and the shipped integers are
    still the ones the training forward computed with."""
    _copy_float_stage(run, tmp_path)
    s = TrainSettings.model_validate(SETTINGS.model_dump() | {"mapper_context": "whole", "steps": 10})
    whole = train(tiny_model_path, tiny_data, tmp_path, s, progress=False)
    coa = whole.adapter_model
    assert "mapper.whole.weight" in coa.trainable_state()
    n = len(whole.specs)
    qs = []
    for bits in ([2] * n, [8] + [2] * (n - 1)):
        coa.set_config(make_config(whole.specs, bits, [Grid()] * n))
        qs.append([layer.current.q for layer in coa.layers[1:]])
    assert all(not torch.equal(a, b) for a, b in zip(*qs))  # layer 0's bits reach every other layer's Q(c)
    inputs = encode(whole.tokenizer, whole.splits.test.texts, s.max_length)
    for config in _configs(whole, 2):
        with torch.no_grad():
            coa.set_config(config)
            trained = coa(**inputs)
            shipped = whole.quantized_model(config)(**inputs).logits
        assert (trained - shipped).abs().max().item() <= 1e-5


class MeasuringSource(RandomConfigSource):
    """The default source plus what a Pareto source measures at its first refinement: sensitivities."""

    sensitivity = None

    def refine(self, step, score):
        from toolchain.search.sensitivity import Sensitivity

        names = tuple(s.name for s in self.specs)
        self.sensitivity = Sensitivity(names, tuple(float(i + 1) for i in range(len(names))), 3, "loss")


def test_run_records_the_sensitivity_its_source_measured(run, tiny_model_path, tiny_data, tmp_path):
    assert run.sensitivity is None  # the default source measures none
    _copy_float_stage(run, tmp_path)
    s = TrainSettings.model_validate(SETTINGS.model_dump() | {"steps": 12})
    source = MeasuringSource(run.specs, SETTINGS.bits, SETTINGS.grids)
    trained = train(tiny_model_path, tiny_data, tmp_path, s, config_source=source, progress=False)
    assert trained.sensitivity == source.sensitivity.to_dict()
    assert Run.load(tmp_path).sensitivity["values"][run.specs[-1].name] == len(run.specs)


def test_tampered_checkpoint_is_refused(interrupted, tiny_model_path, tiny_data, tmp_path):
    run_dir = tmp_path / "r"
    shutil.copytree(interrupted, run_dir)
    state = latest_checkpoint(run_dir) / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[-1] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(
        IntegrityError, match=r"state.safetensors: sha256 .* recorded in .*checkpoint.json \(changed or truncated\)"
    ):
        train(tiny_model_path, tiny_data, run_dir, SETTINGS, progress=False)


@pytest.mark.parametrize("victim", ["adapter.safetensors", "base.safetensors", "float/model.safetensors"])
def test_edited_or_truncated_run_file_is_refused_by_name(run, tmp_path, victim):
    run_dir = tmp_path / "r"
    shutil.copytree(run.run_dir, run_dir)
    f = run_dir / victim
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(IntegrityError, match=victim.replace(".", r"\.")):
        Run.load(run_dir)


def test_run_trained_by_other_code_is_refused_with_what_to_do(run, tmp_path):
    old = tmp_path / "r"
    shutil.copytree(run.run_dir, old)
    manifest = json.loads((old / MANIFEST).read_text())
    (old / MANIFEST).write_text(json.dumps(manifest | {"code": "0" * 16}))
    expected = f"trained by edgeq training code '0{{16}}', this edgeq's is {run_files.code_hash()}"
    with pytest.raises(BadInputError, match=expected):
        Run.load(old)


def test_unfinished_run_of_other_code_is_not_resumed(run, tiny_model_path, tiny_data, tmp_path):
    """A run interrupted under one edgeq and resumed under another would mix the two codes' stages."""
    old = tmp_path / "r"
    shutil.copytree(run.run_dir, old)
    (old / MANIFEST).unlink()
    (old / run_files.CODE).write_text(json.dumps({"code": "0" * 16}))
    with pytest.raises(BadInputError, match=r"code\.json: .* holds a run of edgeq training code 0{16}"):
        train(tiny_model_path, tiny_data, old, run.settings, progress=False)
    (old / run_files.CODE).unlink()  # a run started by an edgeq that recorded no code hash
    with pytest.raises(BadInputError, match=r"holds a run of edgeq training code unrecorded \(an edgeq older"):
        train(tiny_model_path, tiny_data, old, run.settings, progress=False)


def test_the_training_code_hash_covers_the_merge_and_not_the_exporter():
    """The hash follows every module the training imports (at any depth, also inside functions) and
    nothing else: an exporter change does not retrain, a merge change does."""
    files = {p.as_posix() for p in import_closure(run_files.CODE_ROOTS)}
    assert any(f.endswith("toolchain/adapter/merge.py") for f in files)
    assert any(f.endswith("toolchain/search/refine.py") for f in files)  # the build's training configurations
    assert any(f.endswith("toolchain/quant/core.py") for f in files)
    assert not any("/exporters/" in f or "/validators/" in f or f.endswith("build/report.py") for f in files)
    # per-device selection runs after training: changing it must not retrain
    assert not any(f.endswith(("search/select.py", "build/branch.py")) for f in files)


def test_selection_is_imported_from_the_search_package_on_first_use():
    import toolchain.search as search
    from toolchain.search import select

    assert search.select_configs is select.select_configs and search.SearchResult is select.SearchResult
    assert all(hasattr(search, name) for name in search.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        search.nothing  # noqa: B018


def test_run_directory_of_other_settings_is_refused(run, tiny_model_path, tiny_data):
    other = SETTINGS.model_copy(update={"steps": 31})
    with pytest.raises(BadInputError, match="holds a run with other settings"):
        train(tiny_model_path, tiny_data, run.run_dir, other, progress=False)


def test_run_recorded_before_a_setting_existed_is_the_same_run(run, tiny_model_path, tiny_data, tmp_path):
    """settings.json written by an edgeq without `weighting`: the run trained with its default, MEAN."""
    run_dir = tmp_path / "r"
    shutil.copytree(run.run_dir, run_dir)
    recorded = json.loads((run_dir / run_files.SETTINGS).read_text())
    (run_dir / run_files.SETTINGS).write_text(json.dumps({k: v for k, v in recorded.items() if k != "weighting"}))
    manifest = json.loads((run_dir / MANIFEST).read_text())
    manifest["files"][run_files.SETTINGS] = sha256_file(run_dir / run_files.SETTINGS)  # as that edgeq recorded it
    (run_dir / MANIFEST).write_text(json.dumps(manifest))
    again = train(tiny_model_path, tiny_data, run_dir, SETTINGS, progress=False)
    assert sha256_file(again.run_dir / run_files.ADAPTER) == sha256_file(run.run_dir / run_files.ADAPTER)
    geometric = SETTINGS.model_copy(update={"weighting": ConfigWeighting.GEOMETRIC})
    with pytest.raises(BadInputError, match="holds a run with other settings"):
        train(tiny_model_path, tiny_data, run_dir, geometric, progress=False)


def test_run_loads_again_with_the_same_integers(run):
    again = Run.load(run.run_dir)
    config = _configs(run, 1)[0]
    a, b = run.generate(config), again.generate(config)
    assert all(torch.equal(a[n].q, b[n].q) for n in a)
    assert again.label_names == run.label_names and again.splits.test.ids == run.splits.test.ids


def test_same_documents_under_another_source_name_reuse_the_run(run, tiny_model_path, tiny_data):
    renamed = dataclasses.replace(tiny_data, source="elsewhere/tiny")
    assert train(tiny_model_path, renamed, run.run_dir, SETTINGS, progress=False).run_dir == run.run_dir


def test_run_directory_of_other_data_is_refused(run, tiny_model_path, tiny_data):
    edited = dataclasses.replace(tiny_data, texts=["changed"] + tiny_data.texts[1:])
    with pytest.raises(BadInputError, match="holds a run with other data"):
        train(tiny_model_path, edited, run.run_dir, SETTINGS, progress=False)


class TwoConfigs:
    """Every step trains a 2-bit and an 8-bit configuration, whose losses differ several-fold."""

    def __init__(self, specs):
        self.configs = [make_config(specs, [b] * len(specs), [Grid()] * len(specs)) for b in (2, 8)]

    def sample(self, rng, k):
        return self.configs

    def refine(self, step, score):
        pass


def _step_gradients(run: Run, settings: TrainSettings, loss_of) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Gradients of one `train_step`, and of loss_of(each configuration's loss) summed by hand."""
    model, source = copy.deepcopy(run.adapter_model), TwoConfigs(run.specs)
    teacher = run_files.load_logits(run.run_dir)["train"]
    data = TrainData(run.splits.train, teacher, run.splits.val, run.tokenizer, settings.effective_train_length)
    params = [p for p in model.parameters() if p.requires_grad]
    train_step(model, data, settings, source, step=3)
    got = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
    model.zero_grad(set_to_none=True)
    idx = batch_indices(len(data.train), settings.batch_size, settings.seed, 3)
    rank = step_plan(settings, source, 3)[0]
    total, losses = 0.0, []
    for i, config in enumerate(source.configs):
        chunk = idx[i :: len(source.configs)]
        model.set_config(config, rank)
        logits = model(**data.inputs([data.train.texts[j] for j in chunk]))
        labels = torch.as_tensor([data.train.labels[j] for j in chunk])
        loss = distill_loss(logits, labels, data.teacher[chunk], settings.distill_weight)
        losses.append(loss.item())
        total = total + loss_of(loss) * len(chunk) / len(idx)
    total.backward()
    assert max(losses) > 2 * min(losses)  # the two configurations' losses differ enough to tell weightings apart
    return got, [torch.zeros_like(p) if p.grad is None else p.grad for p in params]


@pytest.mark.parametrize(
    ("weighting", "loss_of"), [(ConfigWeighting.MEAN, lambda x: x), (ConfigWeighting.GEOMETRIC, torch.log)]
)
def test_a_step_descends_the_weighted_sum_of_its_configurations_losses(run, weighting, loss_of):
    """MEAN: the gradient of the summed losses; GEOMETRIC: of the summed log-losses, so the 8-bit
    configuration's small loss is not drowned out by the 2-bit one's."""
    settings = SETTINGS.model_copy(update={"weighting": weighting})
    got, want = _step_gradients(run, settings, loss_of)
    assert all(torch.allclose(g, w, rtol=1e-4, atol=1e-7) for g, w in zip(got, want, strict=True))
    other = {ConfigWeighting.MEAN: torch.log, ConfigWeighting.GEOMETRIC: lambda x: x}[weighting]
    _, unlike = _step_gradients(run, settings, other)
    assert not all(torch.allclose(g, u, rtol=1e-2) for g, u in zip(got, unlike, strict=True))


def _with_units(run: Run, units: DeltaUnits) -> Run:
    """The same run, its adapter model computing the product in `units` (a copy; `run` is untouched)."""
    model = copy.deepcopy(run.adapter_model)
    for layer in model.layers:
        layer.units = units
    other = copy.copy(run)
    other.adapter_model = model
    return other


def test_coarse_step_units_are_one_weight_change_at_every_bit_width(run):
    """DeltaUnits.COARSE_STEP: the product counts steps of the run's lowest bit-width, so at the lowest
    bit-width it is STEP's product and at any other the same weight change (the step ratio applied), on
    the merged path and the branch path alike."""
    step, coarse = (_with_units(run, u).adapter_model for u in (DeltaUnits.STEP, DeltaUnits.COARSE_STEP))
    specs, lowest = run.specs, min(SETTINGS.bits)
    for bits in SETTINGS.bits:
        for grid in (Grid(), Grid(scheme=Scheme.ASYMMETRIC), Grid(block_size=16)):
            config = make_config(specs, [bits] * len(specs), [grid] * len(specs))
            step.set_config(config)
            coarse.set_config(config)
            for s, c in zip(step.layers, coarse.layers, strict=True):
                n, g = s.spec.in_features, grid.block_size
                in_steps, in_coarse = s._parts(s.current)[2], c._parts(c.current)[2]
                ref, own = (s.base.get(s.spec.name, b, grid).scale for b in (lowest, bits))
                if bits == lowest:
                    assert torch.equal(in_coarse, in_steps)
                else:
                    ratio = per_weight(ref, n, g) / per_weight(own, n, g)
                    assert torch.allclose(in_coarse, in_steps * ratio, rtol=1e-5, atol=1e-7)
                    assert ratio.mean() > 1.5  # a finer grid's step is smaller: the product counts more of them
                if g is None:  # one step per row: the branch's weight delta is the merged product in weights
                    up, down = c.branch_factors(c.current)[:2]
                    assert torch.allclose(up @ down, in_coarse * own, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("units", [DeltaUnits.STEP, DeltaUnits.COARSE_STEP])
def test_generated_integers_equal_the_forward_in_either_units(run, units):
    """Whichever units the product counts in, the generated integer model computes the training forward,
    and the two units generate different integers from the same adapter."""
    other = _with_units(run, units)
    inputs = encode(run.tokenizer, run.splits.test.texts[:8], SETTINGS.max_length)
    config = _configs(run, 1)[0]
    with torch.no_grad():
        other.adapter_model.set_config(config)
        trained = other.adapter_model(**inputs)
        shipped = other.quantized_model(config)(**inputs).logits
    assert (trained - shipped).abs().max().item() <= 1e-5
    flipped = _with_units(run, DeltaUnits.COARSE_STEP if units is DeltaUnits.STEP else DeltaUnits.STEP)
    mine, theirs = other.generate(config), flipped.generate(config)
    assert any(not torch.equal(q.q, theirs[n].q) for n, q in mine.items())
