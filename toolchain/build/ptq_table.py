"""`edgeq quantize`: post-training quantization of a run's float fine-tune at uniform bit-widths, the
baseline table a user compares the adapter with."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from toolchain.bitconfig import config_from_bits


def quantize_table(run_dir: Path, bits: Sequence[int], roundings: Sequence[str], block_size: int | None) -> list[dict]:
    """Post-training quantization of the run's float fine-tune at uniform bit-widths, scored on the test split."""
    from toolchain.adapter import Run
    from toolchain.evaluate import metrics, predict_logits
    from toolchain.quant.model import Rounding, quantize_model

    run = Run.load(run_dir)
    float_model, test = run.float_model(), run.splits.test
    reference = run.float_logits("test")
    rows = []
    print(f"float fine-tune: {run.float_accuracy:.2f} % test accuracy")
    for b in bits:
        config = config_from_bits(run.specs, b, block_size=block_size)
        for r in roundings:
            qmodel = quantize_model(float_model, config, Rounding(r))
            m = metrics(
                predict_logits(qmodel, run.tokenizer, test.inputs, run.settings.max_length), test.labels, reference
            )
            rows.append({"bits": b, "rounding": r, **m.to_dict()})
            print(f"{b} bits {r:>3}: accuracy {m.accuracy:6.2f} %  agreement {m.agreement:6.2f} %  KL {m.kl:.4f}")
    return rows
