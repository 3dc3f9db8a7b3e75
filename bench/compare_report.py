"""bench/compare.py's result as README tables: each accuracy with its 95 % interval, each method against
edgeq with McNemar's exact test, significance stated, and the plot of accuracy against file size."""

from __future__ import annotations

from pathlib import Path

from stats import ALPHA, accuracy_interval, decode_predictions, mcnemar

METHODS = {
    "edgeq": "edgeq (CoA-LoRA, merged integers)",
    "shared_lora": "Shared-LoRA (same adapter, Q(c) = I)",
    "per_config_lora": "per-config LoRA",
    "peqa_scales": "per-config PEQA (scales only)",
    "naive_merge_rtn": "float adapter merged + RTN",
    "ptq_mse": "PTQ MSE-clipped",
    "ptq_rtn": "PTQ absmax RTN",
    "uniform_rtn": "uniform RTN",
}
ORT_METHODS = {
    "ort_dynamic_int8_per_channel": "ORT quantize_dynamic int8 per-channel",
    "ort_matmul_nbits4_b32": "ORT MatMulNBits 4-bit RTN b32",
    "ort_matmul_nbits4_b128": "ORT MatMulNBits 4-bit RTN b128",
    "ort_matmul_nbits4_hqq_b128": "ORT MatMulNBits 4-bit HQQ b128",
}
HEAD = (
    "| method | bits/weight | accuracy % [95 % CI] | agreement % | KL | file MB | vs edgeq: only edgeq / only it right "
    "| McNemar p |"
)
RULE = "|---|---|---|---|---|---|---|---|"


def _accuracy(m: dict, labels: list[int]) -> str:
    pred = decode_predictions(m["predictions"])
    correct = sum(p == y for p, y in zip(pred, labels))
    lo, hi = accuracy_interval(correct, len(labels))
    return f"{100.0 * correct / len(labels):.2f} [{lo:.1f}, {hi:.1f}]"


def _versus(m: dict, edgeq: dict | None, labels: list[int], tests: list[dict]) -> str:
    if edgeq is None or m is edgeq:
        return "| |"
    t = mcnemar(decode_predictions(edgeq["predictions"]), decode_predictions(m["predictions"]), labels)
    tests.append(t)
    verdict = "significant" if t["significant"] else "not significant"
    return f"| {t['only_a_right']} / {t['only_b_right']} | {t['p_value']:.3g} ({verdict}) |"


def _row(label: str, m: dict, bits: str, edgeq: dict | None, labels: list[int], tests: list[dict]) -> str:
    if "error" in m:
        return f"| {label} | {bits} | error: {m['error'][:80]} | | | | | |"
    return (
        f"| {label} | {bits} | {_accuracy(m, labels)} | {m['agreement']:.2f} | {m['kl']:.4f} "
        f"| {m['file_bytes'] / 1e6:.1f} {_versus(m, edgeq, labels, tests)}"
    )


def compare_markdown(result: dict, prov: dict) -> str:
    """The whole README block: provenance line, one table per target, onnxruntime's quantizers, cost."""
    labels = decode_predictions(result["test_labels"])
    tests: list[dict] = []
    lines = [
        f"Measured at commit {prov['commit']} (code {prov['code_hash']}) on {prov['machine']['date'][:10]}: "
        f"`{prov['data']}`, {len(labels)} test documents; every configuration was chosen by the search on "
        f"validation, every number below is on test. p: McNemar's exact test against edgeq at the same "
        f"budget, significant when below {ALPHA:g}.",
        "",
    ]
    ref = result["reference"]
    edgeq_top = None
    for name, row in sorted(result["rows"].items(), key=lambda kv: -kv[1]["avg_bits"]):
        methods = row["methods"]
        edgeq = methods.get("edgeq")
        edgeq_top = edgeq_top or (name, edgeq)
        lines += [f"**{name}** ({row['avg_bits']:.3f} bits per weight):", "", HEAD, RULE]
        for key, label in METHODS.items():
            if key in methods:
                bits = f"{methods[key].get('avg_bits', row['avg_bits']):.3f}"
                lines.append(_row(label, methods[key], bits, edgeq, labels, tests))
        lines.append("")
    if edgeq_top is not None:
        top_name, top = edgeq_top
        lines += [f"**References** (paired against edgeq at {top_name}):", "", HEAD, RULE]
        lines.append(_row("float (ONNX)", ref["float_onnx"], "32", top, labels, tests))
        for key, label in ORT_METHODS.items():
            if key in result["ort_baselines"]:
                lines.append(_row(label, result["ort_baselines"][key], "", top, labels, tests))
        lines.append("")
    significant = sum(t["significant"] for t in tests)
    lines.append(
        f"{significant} of {len(tests)} paired comparisons are significant at p < {ALPHA:g} "
        "(no correction for multiple comparisons)."
        if significant
        else f"None of the {len(tests)} paired comparisons is significant at p < {ALPHA:g}."
    )
    lines += ["", cost_line(result.get("cost", {}))]
    return "\n".join(lines)


def cost_line(cost: dict) -> str:
    w = cost.get("wall_s", {})
    if "per_config_one" not in w:
        return f"Cost (wall): edgeq training + search for all devices {w.get('edgeq_all_devices', float('nan')):.0f} s."
    return (
        f"Cost (wall, float stages shared {w['shared_float_stages']:.0f} s included on both sides): edgeq training "
        f"+ search for all devices {w['edgeq_all_devices']:.0f} s; one per-configuration fine-tune "
        f"{w['per_config_one']:.0f} s, all devices {w['per_config_all_devices']:.0f} s; ratio edgeq / one "
        f"per-config {w['edgeq_over_one_per_config']:.2f}."
    )


def compare_plot(result: dict, png: Path) -> Path:
    """Accuracy against file size, one marker per method, float and onnxruntime baselines as references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for key, label in METHODS.items():
        pts = [r["methods"][key] for r in result["rows"].values() if "accuracy" in r["methods"].get(key, {})]
        if pts:
            ax.scatter([p["file_bytes"] / 1e6 for p in pts], [p["accuracy"] for p in pts], label=label, alpha=0.8)
    for key, label in ORT_METHODS.items():
        m = result["ort_baselines"].get(key, {})
        if "accuracy" in m:
            ax.scatter(m["file_bytes"] / 1e6, m["accuracy"], marker="x", s=60, label=label)
    f = result["reference"]["float_onnx"]
    ax.scatter(f["file_bytes"] / 1e6, f["accuracy"], marker="*", s=120, color="black", label="float (ONNX)")
    ax.set_xlabel("model file MB")
    ax.set_ylabel("test accuracy % (onnxruntime)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
