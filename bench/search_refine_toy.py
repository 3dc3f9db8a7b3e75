"""Pareto-refined vs spread-only training sets on the analytic toy problem (MiniLM shapes, all profiles).

Reports, per seed, the set's hypervolume per refinement round (shared reference point) and the best toy
loss each final set holds at budgets of 2.5 to 4 bits per weight. The toy loss stands in for the adapter's
validation loss; the held-out accuracy comparison of the issue needs the trained adapter.

    python bench/search_refine_toy.py [--rounds 8] [--seeds 3] [--out bench/results/search_refine_toy.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from search_toy import ToyProblem, bert_like_specs
from spread_source import SpreadOnlySource

from toolchain.io import atomic_write_json
from toolchain.profiles import default_profiles_dir, load_profiles
from toolchain.search import ParetoConfigSource

BUDGETS = (2.5, 3.0, 3.5, 4.0)


def best_at(configs, loss, budget: float) -> float | None:
    within = [loss(c) for c in configs if c.avg_bits <= budget]
    return min(within) if within else None


def one_seed(profiles, specs, seed: int, rounds: int) -> dict:
    toy = ToyProblem.make(specs, seed=seed)
    spread = SpreadOnlySource.for_profiles(profiles, specs, seed=seed)
    spread.refine(0, toy.loss)
    ref = tuple(spread.history[0]["reference"])
    pareto = ParetoConfigSource.for_profiles(profiles, specs, seed=seed, hv_reference=ref)
    t = time.perf_counter()
    for r in range(rounds):
        pareto.refine(100 * r, toy.loss)
    return {
        "seed": seed,
        "seconds": time.perf_counter() - t,
        "spread_hypervolume": spread.history[0]["set_hypervolume"],
        "pareto_hypervolume_per_round": [h["set_hypervolume"] for h in pareto.history],
        "evaluations": sum(h["evaluations"] + h.get("probe_evaluations", 0) for h in pareto.history),
        "best_loss_spread": {b: best_at(spread.configs, toy.loss, b) for b in BUDGETS},
        "best_loss_pareto": {b: best_at(pareto.configs, toy.loss, b) for b in BUDGETS},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/results/search_refine_toy.json"))
    args = ap.parse_args()
    profiles = load_profiles([default_profiles_dir()])
    specs = bert_like_specs()
    rows = [one_seed(profiles, specs, s, args.rounds) for s in range(args.seeds)]
    for r in rows:
        hv = r["pareto_hypervolume_per_round"]
        print(
            f"seed {r['seed']}: hypervolume spread {r['spread_hypervolume']:.3f} -> "
            f"pareto round 1 {hv[0]:.3f}, round {len(hv)} {hv[-1]:.3f}; "
            f"{r['evaluations']} evaluations, {r['seconds']:.1f} s"
        )
        for b in BUDGETS:
            s, p = r["best_loss_spread"][b], r["best_loss_pareto"][b]
            print(f"  <= {b} bits: best loss spread {s:.4f}  pareto {p:.4f}")
    atomic_write_json(args.out, {"rounds": args.rounds, "runs": rows})
    print("wrote", args.out)


if __name__ == "__main__":
    main()
