"""Time the per-device search of all shipped profiles on MiniLM with a real scorer, and compare baselines.

Until the trained adapter exists, the scorer is post-training quantization of MiniLM with a logistic head
fitted on frozen features: one evaluation swaps the configuration's dequantized integers into the model
(integers cached per layer and choice) and runs one forward over a fixed validation batch, which is the cost
the issue budgets (0.5-1 s on MiniLM). Writes a JSON summary and the front plot.

    python bench/search_minilm.py [--val-docs 64] [--rounding rtn] [--out bench/results/search_minilm.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from search_baselines import beats, best_feasible_uniform, best_random, uniform_at_least
from search_constraints import check_constraints
from sklearn.linear_model import LogisticRegression

from toolchain.bitconfig import BitConfig
from toolchain.data import load_dataset, split
from toolchain.evaluate import Metrics, encode, metrics
from toolchain.io import atomic_write_json
from toolchain.models import default_model_path, load_model, quantizable_layers
from toolchain.profiles import default_profiles_dir, load_profiles
from toolchain.quant.model import QUANTIZERS, Rounding
from toolchain.search import (
    ScoreCache,
    SearchSettings,
    SearchSpace,
    error_of,
    loss_sensitivity,
    select_configs,
)
from toolchain.search.plot import plot_front
from toolchain.whole_model import search_profiles


class SwapScorer:
    """Metrics of MiniLM with a configuration's dequantized integers swapped in, on one validation batch."""

    def __init__(self, model, batch: dict, labels: list[int], rounding: Rounding):
        self.model, self.batch, self.labels = model, batch, labels
        self.quantize = QUANTIZERS[rounding]
        self.float_weights = {
            s.name: model.get_submodule(s.name).weight.detach().clone() for s in quantizable_layers(model)
        }
        self._q: dict[tuple, object] = {}
        self.reference = self._logits()

    @torch.no_grad()
    def _logits(self) -> torch.Tensor:
        return self.model(**self.batch).logits.float()

    def _weight(self, name: str, lb) -> torch.Tensor:
        key = (name, lb.bits, str(lb.scheme), lb.block_size)
        if key not in self._q:
            self._q[key] = self.quantize(self.float_weights[name], lb.bits, lb.scheme, lb.block_size)
        return self._q[key].dequantize()

    @torch.no_grad()
    def __call__(self, config: BitConfig) -> Metrics:
        for name, lb in config.layers.items():
            self.model.get_submodule(name).weight.copy_(self._weight(name, lb))
        try:
            return metrics(self._logits(), self.labels, self.reference)
        finally:
            for name, w in self.float_weights.items():
                self.model.get_submodule(name).weight.copy_(w)


@torch.no_grad()
def fit_head(model, tok, texts: list[str], labels: list[int], max_length: int) -> None:
    """Logistic regression on the pooled features of the frozen encoder, written into the classifier."""
    feats = []
    for i in range(0, len(texts), 32):
        out = model.bert(**encode(tok, texts[i : i + 32], max_length))
        feats.append(out.pooler_output)
    clf = LogisticRegression(max_iter=2000, C=10.0).fit(torch.cat(feats).numpy(), np.array(labels))
    model.classifier.weight.copy_(torch.as_tensor(clf.coef_, dtype=torch.float32))
    model.classifier.bias.copy_(torch.as_tensor(clf.intercept_, dtype=torch.float32))


class TimedScorer:
    """Counts the seconds spent inside the scorer, so search overhead can be told from scoring time."""

    def __init__(self, score):
        self.score, self.seconds, self.calls = score, 0.0, 0

    def __call__(self, config: BitConfig) -> Metrics:
        t = time.perf_counter()
        try:
            return self.score(config)
        finally:
            self.seconds += time.perf_counter() - t
            self.calls += 1


def _spread_subset(ds, n: int):
    step = max(1, len(ds) // n)
    return ds.subset(list(range(0, len(ds), step))[:n])


def compare(profiles, specs, result, cache, n_random: int, seed: int) -> list[dict]:
    rows = []
    for p in profiles:
        s = result.selection(p.name)
        uni = uniform_at_least(p, specs, cache, s.cost)
        feas = best_feasible_uniform(p, specs, cache)
        rnd = best_random(p, specs, cache, n=n_random, seed=seed)
        rows.append(
            {
                "profile": p.name,
                "chosen": s.to_dict() | {"config": None, "bits": s.config.bits_vector()},
                "constraint_problems": check_constraints(p, s.config, specs),
                "uniform_at_least": uni and uni.to_dict(),
                "beats_uniform_at_least": bool(uni and beats(s.metrics, uni.metrics)),
                "feasible_uniform": feas and feas.to_dict(),
                "beats_feasible_uniform": bool(
                    feas is None or beats(s.metrics, feas.metrics) or feas.config == s.config
                ),
                "best_random": rnd and rnd.to_dict(),
                "beats_best_random": bool(rnd and beats(s.metrics, rnd.metrics)),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--val-docs", type=int, default=64)
    ap.add_argument("--train-docs", type=int, default=300)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--rounding", choices=[r.value for r in Rounding], default="rtn")
    ap.add_argument("--random-n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--sensitivity",
        choices=["kind", "layer"],
        default="layer",
        help="layer: per-layer probe before the timed search, as training records it; kind: probed inside",
    )
    ap.add_argument("--out", type=Path, default=Path("bench/results/search_minilm.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    splits = split(load_dataset(None), seed=0)
    model, tok = load_model(default_model_path(), splits.train.label_names)
    t0 = time.perf_counter()
    train = _spread_subset(splits.train, args.train_docs)  # the splits are sorted by class: stride through
    fit_head(model, tok, train.texts, train.labels, args.max_length)
    val = _spread_subset(splits.val, args.val_docs)
    scorer = SwapScorer(model, encode(tok, val.texts, args.max_length), val.labels, Rounding(args.rounding))
    float_m = metrics(scorer.reference, val.labels)
    print(f"setup {time.perf_counter() - t0:.1f} s; float accuracy on {args.val_docs} docs: {float_m.accuracy:.1f} %")
    specs = quantizable_layers(model)
    profiles = search_profiles(load_profiles([default_profiles_dir()]), model, specs)  # layer budgets
    timed = TimedScorer(scorer)
    cache = ScoreCache(timed)
    sens = None
    if args.sensitivity == "layer":  # what the training run hands over (ParetoConfigSource probes per layer)
        t = time.perf_counter()
        union = SearchSpace.union([SearchSpace.from_profile(p, specs) for p in profiles])
        sens = loss_sensitivity(lambda c: error_of(scorer(c)), union)
        print(f"per-layer sensitivity (training-time, untimed): {time.perf_counter() - t:.1f} s", flush=True)
    t1 = time.perf_counter()
    result = select_configs(profiles, specs, cache, sensitivity=sens, settings=SearchSettings(seed=args.seed))
    search_s = time.perf_counter() - t1
    timing = {
        "search_seconds": search_s,
        "scorer_seconds": timed.seconds,
        "overhead_seconds": search_s - timed.seconds,
        "evaluations": result.evaluations,
        "seconds_per_evaluation": timed.seconds / max(timed.calls, 1),
        "projected_seconds_at_1s_per_evaluation": search_s - timed.seconds + result.evaluations * 1.0,
        "stages": result.stages,
    }
    print("search:", json.dumps(timing), flush=True)
    t2 = time.perf_counter()
    rows = compare(profiles, specs, result, cache, args.random_n, args.seed)
    print(f"baselines: {time.perf_counter() - t2:.1f} s", flush=True)
    for r in rows:
        c = r["chosen"]
        print(
            f"{r['profile']:16s} {c['cost']['avg_bits']:.3f} bits {c['cost']['container_mb']:.2f} MB "
            f"acc {c['metrics']['accuracy']:.1f} kl {c['metrics']['kl']:.4f} | beats uniform>= "
            f"{r['beats_uniform_at_least']} feasible-uniform {r['beats_feasible_uniform']} "
            f"random{args.random_n} {r['beats_best_random']} | problems {r['constraint_problems']}"
        )
    summary = {
        "timing": timing,
        "evaluations": result.evaluations,
        "float": float_m.to_dict(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "profiles": rows,
        "result": result.to_dict(),
    }
    atomic_write_json(args.out, summary)
    print("wrote", args.out, *plot_front(result, args.out.with_suffix(""), profiles))


if __name__ == "__main__":
    main()
