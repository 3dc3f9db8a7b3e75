"""One device: merged integers for its configuration -> ONNX -> onnxruntime validation -> package."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

import toolchain
from toolchain.bitconfig import BitConfig
from toolchain.build.fingerprint import model_sha256
from toolchain.build.manifest import REFERENCE_LOGITS, Manifest, Sizes, TokenizerSettings
from toolchain.build.package import hash_files, write_loading_files, write_manifest
from toolchain.build.report import device_report
from toolchain.build.sizes import size_breakdown
from toolchain.data import interleave_classes
from toolchain.evaluate import predict_logits
from toolchain.io import atomic_write_text, staged_dir
from toolchain.memory import release_freed
from toolchain.profiles import DeviceProfile

CALIBRATION_TEXTS = 64  # training texts whose activation ranges static int8 activations are calibrated on


@dataclass(frozen=True)
class BuildResult:
    """What a build produced for one device."""

    profile: str
    package: Path
    manifest: Manifest

    @property
    def passed(self) -> bool:
        return self.manifest.passed


@dataclass(frozen=True)
class DeviceContext:
    """What every device's packaging shares: the trained run, the model's identity, the front."""

    run: object  # toolchain.adapter.Run
    model_name: str
    front_svg: str | None  # the search's front plot with every device's point, inlined in reports

    @property
    def model_sha256(self) -> str:
        """Hash of the fine-tuned float model the integers were generated from."""
        return model_sha256(self.run.run_dir / "float")

    @property
    def data_source(self) -> str:
        return self.run.splits.test.source


def package_device(
    ctx: DeviceContext, profile: DeviceProfile, config: BitConfig, variant: dict, out_dir: Path
) -> BuildResult:
    """Export, validate and package one device, staged and renamed into OUT/<profile> when complete."""
    from toolchain.exporters import export_model, twin_of
    from toolchain.validators import validate
    from toolchain.validators.fidelity import FIDELITY_SAMPLES

    run = ctx.run
    test = run.splits.test
    qmodel = run.quantized_model(config, rank=variant.get("rank"), table=profile.embeddings)
    variant = variant | {"tables": _tables_kind(run, profile)}
    final = Path(out_dir) / profile.name
    with staged_dir(final) as stage, tempfile.TemporaryDirectory() as scratch:
        export = export_model(
            qmodel,
            run.tokenizer,
            profile,
            config,
            stage / "model.onnx",
            calibration_texts=calibration_texts(run.splits.train, CALIBRATION_TEXTS),
            max_length=run.settings.max_length,
            float_path=Path(scratch) / "float.onnx",
        )
        twin = twin_of(qmodel, export)  # the torch model computing exactly what the graph computes
        fidelity_texts = test.inputs[:FIDELITY_SAMPLES]
        reference = predict_logits(twin, run.tokenizer, fidelity_texts, run.settings.max_length).numpy()
        np.save(stage / REFERENCE_LOGITS, reference)  # lets `edgeq validate` re-check fidelity without torch
        model_config = qmodel.config
        del qmodel, twin  # validation's onnxruntime sessions start without the torch copies
        release_freed()
        report = validate(
            stage / "model.onnx",
            profile,
            tokenizer=run.tokenizer,
            texts=test.inputs,
            labels=test.labels,
            reference_logits=reference,
            float_reference_accuracy=run.float_accuracy,
            float_onnx_path=export.float_model_path,
            max_length=run.settings.max_length,
        )
        write_loading_files(stage, model_config, run.tokenizer, run.settings.max_length)
        manifest = _manifest(ctx, profile, config, variant, export, report, stage)
        atomic_write_text(stage / "report.html", device_report(manifest, ctx.front_svg))
        manifest = manifest.model_copy(update={"files": hash_files(stage)})
        write_manifest(stage, manifest)
    return BuildResult(profile.name, final, manifest)


def _tables_kind(run, profile: DeviceProfile) -> str:
    """How the package's embedding tables were made: float, trained with the adapter, or quantized after it."""
    if profile.embeddings is None:
        return "float"
    return "trained" if run.trained_table(profile.embeddings) else "post-training"


def calibration_texts(train, n: int) -> list[str]:
    """The first `n` training texts, one per class in turn (train keeps the dataset's order, by class)."""
    return [train.inputs[i] for i in interleave_classes(range(len(train)), train.labels)[:n]]


def _manifest(ctx, profile, config, variant, export, report, stage: Path) -> Manifest:
    run = ctx.run
    r = report.to_dict()
    return Manifest(
        edgeq_version=toolchain.__version__,
        profile=profile.model_dump(mode="json"),
        status="passed" if report.passed else "failed",
        failures=list(report.failures),
        model_name=ctx.model_name,
        model_sha256=ctx.model_sha256,
        data_source=ctx.data_source,
        label_names=list(run.label_names),
        tokenizer=TokenizerSettings(
            max_length=run.settings.max_length, input_names=_input_names(stage), pairs=run.splits.test.is_pairs
        ),
        bit_config=config,
        variant=variant,
        sizes=Sizes(
            bits_per_param=r["checks"].get("size", {}).get("bits_per_param"),
            logical_bits_per_weight=config.avg_bits,
            container_bits_per_weight=config.container_bits_per_weight,
            quantized_weight_container_bytes=config.container_bytes,
            file_bytes=sum(p.stat().st_size for p in stage.glob("model.onnx*")),
            breakdown=size_breakdown(stage / "model.onnx"),
        ),
        opset=profile.onnx.opset,
        onnxruntime_version=ort.__version__,
        accuracy=_accuracy(r["checks"].get("accuracy", {})),
        fidelity=_json_native(r["checks"].get("fidelity", {})),
        latency=_json_native(r["checks"].get("latency", {})),
        kernels=_json_native(r["checks"].get("kernels", {})),
        test_ids=list(run.splits.test.ids),
        files={},
    )


def _input_names(stage: Path) -> list[str]:
    import onnx

    return [i.name for i in onnx.load(str(stage / "model.onnx"), load_external_data=False).graph.input]


def _accuracy(check: dict) -> dict[str, float | None]:
    """The manifest's accuracy block from the validator's accuracy check (None where it could not run)."""
    return {
        "onnx": check.get("exact"),  # optimizations off: what the integers mean
        "onnx_default_optimizations": check.get("device"),  # what a device's onnxruntime computes
        "float_reference": check.get("float_reference"),
        "drop": check.get("drop"),
        "n_samples": check.get("n_samples"),  # both modes: every test text
    }


def _json_native(d: dict) -> dict:
    """As it will read back from manifest.json (integer keys become strings)."""
    return json.loads(json.dumps(d))
