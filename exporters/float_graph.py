"""Float ONNX graph of a Hugging Face sequence classifier: the graph the QDQ rewrite starts from.

Route (measured on MiniLM and the tiny test BERT, torch 2.13, onnx 1.23, onnxslim 0.1.98):
- `torch.onnx.export(dynamo=False)` (about 2 s for MiniLM; the dynamo exporter takes about 9 s) at
  opset min(profile opset, 18). Opset 20 would turn GELU into the `Gelu` op, which is not in the
  profiles' `transformer` op set; 18 keeps the `Erf` form every runtime runs (onnxruntime fuses it anyway).
- Attention runs eagerly with an additive 4-D mask computed in the wrapper: transformers' own mask
  builder exports to `Range/And/GreaterOrEqual/Expand` (ops outside the op set), and SDPA does not export
  at opset 13. A prepared 4-D mask is passed through by transformers as is (documented contract).
- onnxslim folds the shape arithmetic and keeps named `MatMul` nodes; onnxsim rewrites MatMul+Add into
  anonymous `Reshape/Gemm/Reshape` chains, which loses the node names the weight matcher checks.
- `onnx.version_converter` lifts the slimmed graph to the profile's opset (21, 25); outputs were
  identical (max abs difference 0.0) before and after conversion for the ops this graph holds.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import warnings
from collections.abc import Iterator

import onnx
import onnxslim
import torch
from onnx import helper, version_converter
from torch import nn

from toolchain.errors import BadInputError

EXPORT_MAX_OPSET = 18  # see the module docstring: opset 20 emits Gelu
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"


class _LogitsWithAdditiveMask(nn.Module):
    """Calls the classifier with a prepared additive mask so that the graph holds only simple ops."""

    def __init__(self, model: nn.Module, input_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(self.input_names, inputs))
        mask = kwargs["attention_mask"][:, None, None, :].to(torch.float32)  # (B, 1, 1, S)
        kwargs["attention_mask"] = (1.0 - mask) * torch.finfo(torch.float32).min
        return self.model(**kwargs).logits


def model_input_names(model: nn.Module, tokenizer) -> tuple[str, ...]:
    """input_ids, attention_mask, and token_type_ids when both the model and the tokenizer use it."""
    params = inspect.signature(model.forward).parameters
    names = [n for n in MODEL_INPUTS if n in params]
    if "token_type_ids" in names and "token_type_ids" not in tokenizer.model_input_names:
        names.remove("token_type_ids")
    if names[:2] != ["input_ids", "attention_mask"]:
        raise BadInputError(
            f"model {type(model).__name__}: forward() takes {sorted(params)}; the exporter needs "
            "input_ids and attention_mask"
        )
    return tuple(names)


@contextlib.contextmanager
def _eager_attention(model: nn.Module) -> Iterator[None]:
    """Temporarily switch the model to eager attention (SDPA does not export at opset 13)."""
    before = getattr(model.config, "_attn_implementation", None)
    if before is not None and before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before is not None and before != "eager":
            model.set_attn_implementation(before)


def _sample_inputs(tokenizer, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """Two texts of different lengths, so that the traced graph sees a padded row."""
    enc = tokenizer(["a b c d e f", "a"], padding=True, return_tensors="pt")
    return tuple(enc[n] for n in names)


def _torch_export(model: nn.Module, tokenizer, opset: int) -> onnx.ModelProto:
    names = model_input_names(model, tokenizer)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {OUTPUT_NAME: {0: "batch"}}
    buf = io.BytesIO()
    with _eager_attention(model), torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter's deprecation notice and the tracer's shape-as-constant notes are expected:
        # shapes stay dynamic through the named axes (checked at other batch and sequence sizes in tests).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            _LogitsWithAdditiveMask(model.eval(), names),
            _sample_inputs(tokenizer, names),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=list(names),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
        )
    return onnx.load_from_string(buf.getvalue())


def convert_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Lift the default-domain opset to `opset` and set the smallest IR version that carries it."""
    current = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset != current:
        model = version_converter.convert_version(model, opset)
    model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    return model


def export_float_graph(model: nn.Module, tokenizer, opset: int) -> onnx.ModelProto:
    """The model's float graph at `opset`: inputs as `model_input_names`, output `logits` (batch, classes)."""
    graph = _torch_export(model, tokenizer, min(opset, EXPORT_MAX_OPSET))
    # No shape inference: it took 2.1 of onnxslim's 2.6 s on MiniLM and changed one Unsqueeze, nothing else
    graph = onnxslim.slim(graph, no_shape_infer=True)
    return convert_opset(graph, opset)


def check_exportable(model: nn.Module, tokenizer, opset: int, source: object) -> None:
    """BadInputError naming `source` unless the model's float graph exports: checked before any training,
    so an architecture the exporter cannot trace fails in seconds, not after the fine-tune."""
    try:
        _torch_export(model, tokenizer, min(opset, EXPORT_MAX_OPSET))
    except Exception as exc:  # the tracer and the exporter raise many kinds; all mean "not exportable"
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise BadInputError(
            f"{source}: the exporter cannot trace this architecture ({kind}): {type(exc).__name__}: {exc}"
        ) from exc
