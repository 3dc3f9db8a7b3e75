"""Float ONNX graph of a Hugging Face sequence classifier: the graph the QDQ rewrite starts from.

Route (measured on MiniLM and the tiny test BERT, torch 2.13, onnx 1.23, onnxslim 0.1.98):
- `torch.onnx.export(dynamo=False)` (about 2 s for MiniLM; the dynamo exporter takes about 9 s) at
  opset min(profile opset, 18). Opset 20 would turn GELU into the `Gelu` op, which is not in the
  profiles' `transformer` op set; 18 keeps the `Erf` form every runtime runs (onnxruntime fuses it anyway).
- Attention runs eagerly with an additive 4-D mask computed in the wrapper: transformers' own mask
  builder exports to `Range/And/GreaterOrEqual/Expand` (ops outside the op set), and SDPA does not export
  at opset 13. A prepared 4-D mask is passed through by transformers as is (documented contract). A model
  that reads the mask as 0/1 weights instead (DeBERTa multiplies its embeddings by it, and an additive
  mask turns every row into inf and NaN) keeps its own 2-D mask: `takes_additive_mask` asks torch which.
- onnxslim folds the shape arithmetic and keeps named `MatMul` nodes; onnxsim rewrites MatMul+Add into
  anonymous `Reshape/Gemm/Reshape` chains, which loses the node names the weight matcher checks.
- `onnx.version_converter` lifts the slimmed graph to the profile's opset (21, 25); outputs were
  identical (max abs difference 0.0) before and after conversion for the ops this graph holds.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import warnings
from collections.abc import Iterator, Sequence

import onnx
import onnxslim
import torch
from onnx import helper, version_converter
from torch import nn

from toolchain.errors import BadInputError
from toolchain.profiles import DeviceProfile, op_key

EXPORT_MAX_OPSET = 18  # see the module docstring: opset 20 emits Gelu
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"
# onnxruntime vs torch on the float graph: about 1e-6 on the architectures that export correctly; a graph that
# computes something else (a dropped mask, an op exported wrongly) is off by whole logits.
FLOAT_GRAPH_TOLERANCE = 1e-3
# Float constants the float graph may hold beyond the model's parameters, as a fraction of them. Every
# architecture that exports cleanly holds fewer (folded position ids and token-type rows). DeBERTa-v3's
# relative-position projections fold into per-layer constants, 2 x layers x the position table: +6 % on
# the tiny test model; on DeBERTa-v3-base that would be 12 x 2 x 512 x 768 = 9.4 M values (5 % of its
# 184 M parameters), shipped in fp32 outside every budget.
FOLDED_CONSTANTS_TOLERANCE = 0.01


def is_causal(model: nn.Module) -> bool:
    """Whether the model's attention is causal (a decoder: Llama, Qwen2, ...): transformers marks its
    attention modules `is_causal`."""
    return any(getattr(m, "is_causal", False) is True for m in model.modules())


class _LogitsWithAdditiveMask(nn.Module):
    """Calls the classifier with a prepared additive mask so that the graph holds only simple ops (with
    `additive` False, with the 2-D mask as given). For a decoder the mask is causal too (a prepared mask
    replaces the one transformers would build): a token sees the tokens up to itself that are not padding."""

    def __init__(self, model: nn.Module, input_names: tuple[str, ...], additive: bool = True):
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.causal = is_causal(model)
        self.additive = additive

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(self.input_names, inputs))
        if not self.additive:
            return self.model(**kwargs).logits
        keep = kwargs["attention_mask"][:, None, None, :].to(torch.float32)  # (B, 1, 1, S)
        if self.causal:
            size = keep.shape[-1]
            keep = torch.tril(torch.ones(size, size, dtype=torch.float32))[None, None] * keep  # (B, 1, S, S)
        kwargs["attention_mask"] = (1.0 - keep) * torch.finfo(torch.float32).min
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


def takes_additive_mask(model: nn.Module, tokenizer) -> bool:
    """Whether the model computes its own logits when given the wrapper's prepared additive mask, on the
    sample inputs in torch (False for a model that multiplies by the mask: DeBERTa)."""
    names = model_input_names(model, tokenizer)
    inputs = _sample_inputs(tokenizer, names)
    with _eager_attention(model), torch.no_grad():
        want = model.eval()(**dict(zip(names, inputs))).logits
        got = _LogitsWithAdditiveMask(model, names).eval()(*inputs)
    return bool((got - want).abs().max() <= FLOAT_GRAPH_TOLERANCE)


def _torch_export(model: nn.Module, tokenizer, opset: int) -> onnx.ModelProto:
    names = model_input_names(model, tokenizer)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {OUTPUT_NAME: {0: "batch"}}
    # eval() on the wrapper too: the exporter restores the mode of the module it is given, its children's included
    wrapper = _LogitsWithAdditiveMask(model.eval(), names, takes_additive_mask(model, tokenizer)).eval()
    buf = io.BytesIO()
    with _eager_attention(model), torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter's deprecation notice and the tracer's shape-as-constant notes are expected:
        # shapes stay dynamic through the named axes (checked at other batch and sequence sizes in tests).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper,
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


def _float_graph_error(model: nn.Module, tokenizer, graph: onnx.ModelProto) -> float:
    """Max abs difference between onnxruntime's logits of `graph` and torch's, on the sample inputs."""
    import onnxruntime as ort

    names = model_input_names(model, tokenizer)
    inputs = _sample_inputs(tokenizer, names)
    with _eager_attention(model), torch.no_grad():
        want = model.eval()(**dict(zip(names, inputs))).logits.float().numpy()
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {n: x.numpy() for n, x in zip(names, inputs)})[0]
    return float(abs(got - want).max())


def _float_constants(graph: onnx.ModelProto) -> int:
    """How many float values the graph's initializers hold."""
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    return sum(math.prod(i.dims) for i in graph.graph.initializer if i.data_type in floats)


def check_exportable(model: nn.Module, tokenizer, profiles: Sequence[DeviceProfile], source: object) -> None:
    """BadInputError naming `source` unless the model's float graph exports and every profile's device runs
    its ops: checked before any training, so an architecture the exporter cannot trace, or that needs an op
    a device lacks, fails in seconds, not after the fine-tune. The quantized graph adds only ops the
    profile's own checks require it to allow (DequantizeLinear, BitShift, ...)."""
    kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    try:
        opset = min(EXPORT_MAX_OPSET, *(p.onnx.opset for p in profiles))
        graph = onnxslim.slim(_torch_export(model, tokenizer, opset), no_shape_infer=True)
    except Exception as exc:  # the tracer and the exporter raise many kinds; all mean "not exportable"
        raise BadInputError(
            f"{source}: the exporter cannot trace this architecture ({kind}): {type(exc).__name__}: {exc}"
        ) from exc
    n_params = sum(p.numel() for p in model.parameters())
    extra = _float_constants(graph) - n_params
    if extra > FOLDED_CONSTANTS_TOLERANCE * n_params:
        raise BadInputError(
            f"{source}: the exported float graph of this architecture ({kind}) holds {extra} more float "
            "constants than the model has parameters: the exporter folded a computation on weights into "
            "constants (for example relative-position projections), which would ship in float outside the "
            "budget; this architecture is not supported"
        )
    diff = _float_graph_error(model, tokenizer, graph)
    if not diff <= FLOAT_GRAPH_TOLERANCE:  # NaN included
        raise BadInputError(
            f"{source}: the exported float graph of this architecture ({kind}) does not compute what torch "
            f"computes: max abs logit difference {diff:.3g} > {FLOAT_GRAPH_TOLERANCE} in onnxruntime on two "
            "padded sample texts; this architecture is not supported"
        )
    problems = []
    for p in profiles:
        needs = {}  # op -> first node using it
        for node in graph.graph.node:
            needs.setdefault(op_key(node), node.name or "(unnamed)")
        lacking = sorted(set(needs) - p.onnx.allowed_ops())
        if lacking:
            ops = ", ".join(f"{op} (node {needs[op]})" for op in lacking)
            problems.append(
                f"{p.where}: onnx.op_sets: the {kind} graph of {source} needs ops this device does not run: "
                f"{ops}; allow them (extra_ops, or op_sets: [onnx] for a runtime with the whole standard)"
            )
    if problems:
        raise BadInputError(problems)
