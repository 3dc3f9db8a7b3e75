"""Profile violations are refused with every problem named, before anything is written."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_corpus, tiny_model_dir

from toolchain.bitconfig import config_from_bits
from toolchain.errors import BadInputError
from toolchain.exporters import export_model
from toolchain.exporters.profile_check import export_problems
from toolchain.models import load_model, quantizable_layers
from toolchain.profiles import default_profiles_dir, load_profile
from toolchain.quant.containers import Container
from toolchain.quant.core import Scheme
from toolchain.quant.model import quantize_model, quantized_weights_of


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(2)
    model, tok = load_model(tiny_model_dir(tmp_path_factory.mktemp("tiny")), tiny_corpus().label_names)
    return model, tok


def _profile(name):
    return load_profile(default_profiles_dir() / f"{name}.yaml")


def test_int4_on_opset13_profile_is_refused_before_writing(tiny, tmp_path):
    model, tok = tiny
    npu = _profile("npu_int8")
    cfg = config_from_bits(quantizable_layers(model), 4, containers=lambda b, s: Container.INT4)
    qmodel = quantize_model(model, cfg)
    out = tmp_path / "pkg" / "model.onnx"
    with pytest.raises(BadInputError) as err:
        export_model(qmodel, tok, npu, cfg, out, calibration_texts=["a b c"])
    first = "bert.encoder.layer.0.attention.self.query"
    assert (
        f"bit config: layer '{first}': container: int4 is not allowed by profile 'npu_int8' (allowed: int8)"
        in err.value.problems
    )
    assert (
        f"bit config: layer '{first}': container: int4 needs opset >= 21, profile 'npu_int8' has opset 13"
        in err.value.problems
    )
    assert err.value.exit_code == 2
    assert not out.parent.exists()  # nothing written, not even the folder


def test_block_size_and_bits_not_allowed(tiny):
    model, _ = tiny
    rpi5 = _profile("rpi5")  # blocks 32/64/128, bits 3-8 except 7
    cfg = config_from_bits(quantizable_layers(model), 7, block_size=16, containers=rpi5.weights.container_for)
    problems = export_problems(rpi5, cfg, quantized_weights_of(quantize_model(model, cfg)), has_calibration=False)
    layer = "bert.encoder.layer.1.output.dense"
    assert f"bit config: layer '{layer}': bits: 7 is not one of 3, 4, 5, 6, 8 (profile 'rpi5')" in problems
    assert (
        f"bit config: layer '{layer}': block_size: 16 is not allowed by profile 'rpi5' "
        "(allowed: 32, 64, 128, or null (per channel))"
    ) in problems


def test_scheme_not_allowed_and_missing_calibration(tiny):
    model, _ = tiny
    npu = _profile("npu_int8")
    cfg = config_from_bits(
        quantizable_layers(model), 8, scheme=Scheme.ASYMMETRIC, containers=lambda b, s: Container.UINT8
    )
    problems = export_problems(npu, cfg, quantized_weights_of(quantize_model(model, cfg)), has_calibration=False)
    assert any("scheme: asymmetric is not one of symmetric" in p for p in problems)
    assert any("container: uint8 is not allowed by profile 'npu_int8' (allowed: int8)" in p for p in problems)
    assert "profile 'npu_int8': activations: int8_static needs calibration_texts (training texts)" in problems


def test_config_that_does_not_describe_the_model_is_refused(tiny):
    model, _ = tiny
    rpi5 = _profile("rpi5")
    specs = quantizable_layers(model)
    cfg4 = config_from_bits(specs, 4, containers=rpi5.weights.container_for)
    cfg8 = config_from_bits(specs, 8, containers=rpi5.weights.container_for)
    problems = export_problems(rpi5, cfg8, quantized_weights_of(quantize_model(model, cfg4)), has_calibration=False)
    assert any("bits: the config says 8, the model's quantized weight has 4" in p for p in problems)
    unquantized = export_problems(rpi5, cfg4, {}, has_calibration=False)
    assert any("the model has no quantized layer (QuantLinear) of this name" in p for p in unquantized)


def test_valid_request_has_no_problems(tiny):
    model, _ = tiny
    rpi5 = _profile("rpi5")
    cfg = config_from_bits(quantizable_layers(model), 4, block_size=32, containers=rpi5.weights.container_for)
    assert export_problems(rpi5, cfg, quantized_weights_of(quantize_model(model, cfg)), has_calibration=False) == []


def test_adapter_branch_needs_the_profile_and_the_models_factors(tiny):
    """A branch_rank on a profile without adapter_branch is refused by name; so is a config whose branch the
    model does not have (a plain quantized model: no int8 factors)."""
    model, _ = tiny
    rpi5 = _profile("rpi5")
    cfg = config_from_bits(quantizable_layers(model), 4, containers=rpi5.weights.container_for)
    weights = quantized_weights_of(quantize_model(model, cfg))
    branched = cfg.model_copy(update={"branch_rank": 2})
    problems = export_problems(rpi5, branched, weights, has_calibration=False)
    assert problems[0] == (
        "bit config: branch_rank: 2: profile 'rpi5' does not allow an adapter branch (adapter_branch: false)"
    )
    down = "bert.encoder.layer.0.attention.self.query.branch.down"
    assert (
        f"bit config: layer '{down}': the model has no quantized layer (QuantLinear) of this name; quantize it first"
        in problems
    )
    allows = rpi5.model_copy(update={"adapter_branch": True})
    assert not any("adapter_branch" in p for p in export_problems(allows, branched, weights, has_calibration=False))
