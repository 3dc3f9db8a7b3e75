"""Embedding table formats on the float fine-tune of a build: accuracy, agreement and KL to the float model
on the validation split, and what each format costs, with no training (the tables are quantized alone,
every other weight float). The shipped profiles' `embeddings:` were chosen from this table, on val.

    python bench/suite.py run embedding-formats --packages dist [--out bench/results/embedding_formats_<data>.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from adapter_common import find_run
from record import provenance
from stats import accuracy_interval
from torch import nn

from toolchain.adapter import Run
from toolchain.evaluate import metrics, predict_logits
from toolchain.io import atomic_write_json
from toolchain.profiles import EmbeddingQuant
from toolchain.quant.core import Scheme
from toolchain.quant.tables import quantize_table, table_cost

RESULTS = Path(__file__).resolve().parent / "results"
FORMATS = [
    EmbeddingQuant(bits=8),
    EmbeddingQuant(bits=4),
    EmbeddingQuant(bits=4, block_size=32),
    EmbeddingQuant(bits=4, scheme=Scheme.ASYMMETRIC, block_size=32),
    EmbeddingQuant(bits=3, block_size=32),
    EmbeddingQuant(bits=3, scheme=Scheme.ASYMMETRIC, block_size=32),
    EmbeddingQuant(bits=2, block_size=32),
    EmbeddingQuant(bits=2, scheme=Scheme.ASYMMETRIC),
    EmbeddingQuant(bits=2, scheme=Scheme.ASYMMETRIC, block_size=32),
    EmbeddingQuant(bits=2, scheme=Scheme.ASYMMETRIC, block_size=16),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packages", type=Path, required=True, help="an `edgeq build --out` directory")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run.load(find_run(args.packages))
    val, model = run.splits.val, run.float_model()
    reference = run.float_logits("val")
    tables = {n: m for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
    trained = {n: m.weight.detach().clone() for n, m in tables.items()}
    entries = sum(w.numel() for w in trained.values())
    rows = [{"format": "float", **metrics(reference, val.labels, reference).to_dict(), "bits_per_entry": 32.0}]
    for spec in FORMATS:
        with torch.no_grad():
            for n, m in tables.items():
                m.weight.copy_(quantize_table(trained[n], spec).dequantize())
        m = metrics(predict_logits(model, run.tokenizer, val.texts, run.settings.max_length), val.labels, reference)
        costs = [table_cost(*w.shape, spec) for w in trained.values()]
        row = {
            "format": spec.label(),
            "spec": spec.model_dump(mode="json"),
            **m.to_dict(),
            "accuracy_ci95": accuracy_interval(round(m.accuracy * len(val) / 100), len(val)),
            "bits_per_entry": sum(c[0] for c in costs) / entries,
            "stored_mb": sum(c[1] for c in costs) / 1e6,
        }
        rows.append(row)
        print(
            f"{row['format']:<28} acc {m.accuracy:6.2f}  agree {m.agreement:6.2f}  KL {m.kl:.4f}  "
            f"{row['bits_per_entry']:.3f} bits  {row['stored_mb']:.2f} MB",
            flush=True,
        )
    out = args.out or RESULTS / f"embedding_formats_{val.source}.json"
    record = provenance(
        __file__,
        data=val.source,
        seeds=[run.settings.seed],
        chosen_on="val",
        reported_on="val",
        threads=torch.get_num_threads(),
    )
    atomic_write_json(out, {"provenance": record, "n_val": len(val), "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
