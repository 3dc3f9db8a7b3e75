"""Self-contained HTML reports (no network): Pareto front, per-layer bit map, size breakdown, tables."""

from __future__ import annotations

import html
import io
from collections.abc import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from toolchain.bitconfig import BitConfig  # noqa: E402
from toolchain.build.manifest import Manifest  # noqa: E402
from toolchain.profiles import EmbeddingQuant  # noqa: E402

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#1d232a}
h1{margin-bottom:.2rem} .sub{color:#5b6570;margin-top:0}
.badge{display:inline-block;padding:.15rem .6rem;border-radius:1rem;font-weight:600;color:#fff}
.passed{background:#1a7f37} .failed{background:#cf222e}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border-bottom:1px solid #d0d7de;padding:.3rem .8rem;text-align:left}
th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1.5rem} figure{margin:0} svg{max-width:100%;height:auto}
ul.fail{color:#cf222e}
"""


def _svg(fig) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "edgeq"}):  # same figure, same bytes
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return inline_svg(buf.getvalue())


def inline_svg(svg_text: str | None) -> str:
    """An SVG file's content without its XML prolog and doctype, for inlining in HTML."""
    if not svg_text:
        return "<p class='sub'>no search front for this package (exported with a given configuration)</p>"
    return svg_text[svg_text.index("<svg") :]


def bitmap_svg(config: BitConfig) -> str:
    """Per-layer bit-width map: transformer block on x, module type on y."""
    from toolchain.models import _LAYER_INDEX

    cells: dict[tuple[str, int], int] = {}
    for name, lb in config.layers.items():
        m = _LAYER_INDEX.search(name + ".")
        block, kind = (int(m.group(1)), name[m.end() :]) if m else (0, name)
        cells[(kind, block)] = lb.bits
    kinds = list(dict.fromkeys(k for k, _ in cells))
    blocks = sorted({b for _, b in cells})
    grid = [[cells.get((k, b), float("nan")) for b in blocks] for k in kinds]
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(blocks), 0.9 + 0.35 * len(kinds)))
    im = ax.imshow(grid, cmap="viridis", vmin=2, vmax=8, aspect="auto")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w" if v < 6 else "k", fontsize=8)
    ax.set_xticks(range(len(blocks)), [str(b) for b in blocks])
    ax.set_yticks(range(len(kinds)), kinds, fontsize=8)
    ax.set_xlabel("transformer block")
    fig.colorbar(im, ax=ax, label="bits")
    return _svg(fig)


def size_svg(breakdown: dict[str, int]) -> str:
    fig, ax = plt.subplots(figsize=(6, 1.6))
    left = 0.0
    for part, nbytes in breakdown.items():
        mb = nbytes / 1e6
        ax.barh([0], [mb], left=left, label=f"{part} {mb:.2f} MB")
        left += mb
    ax.set_yticks([])
    ax.set_xlabel("MB in model.onnx")
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.5))
    return _svg(fig)


def _table(rows: Iterable[tuple], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{c:.4g}</td>" if isinstance(c, float) else f"<td>{html.escape(str(c))}</td>" for c in r
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def _bytes(n: int | None) -> str:
    return "n/a" if not n else f"{n:,}"


def _variant(v: dict) -> str:
    """'merged integers (CoA-LoRA), rank 8', with the branch's share of the bits when it is one."""
    out = f"{v.get('weights', '?')}, rank {v.get('rank', '?')}"
    share = v.get("branch_bits_per_weight")
    return out + (f", branch {share:.3f} of the bits / weight" if share else "")


def _tables(m: Manifest) -> str:
    """'int2 asymmetric block 32, scales trained with the adapter' (or float)."""
    spec, kind = m.profile.get("embeddings"), m.variant.get("tables", "?")
    if spec is None:
        return "float (fp32)"
    how = {"trained": "scales trained with the adapter", "post-training": "quantized after training"}.get(kind, kind)
    return f"{EmbeddingQuant.model_validate(spec).label()}, {how}"


def _variant_comparison(val: dict | None) -> list[tuple[str, str]]:
    """What chose merged or branch: both candidates' accuracy on the search's validation documents."""
    if not val:
        return []
    rows = [("validation accuracy, merged integers", _num(val["merged"]["accuracy"], " %"))]
    branch = val.get("branch")
    label = f"validation accuracy, int8 branch (rank {val.get('branch_rank')})"
    rows.append((label, "no rank fits the budget" if branch is None else _num(branch["accuracy"], " %")))
    return rows


def device_report(m: Manifest, front_svg: str | None) -> str:
    name = m.profile["name"]
    fails = "".join(f"<li>{html.escape(f)}</li>" for f in m.failures)
    acc = m.accuracy
    metrics = [
        ("onnxruntime accuracy (test, optimizations off)", _num(acc["onnx"], " %")),
        ("onnxruntime accuracy (test, default optimizations)", _num(acc.get("onnx_default_optimizations"), " %")),
        ("float reference accuracy", _num(acc["float_reference"], " %")),
        ("drop (allowed)", f"{_num(acc['drop'], ' pts')} ({m.profile['accuracy']['max_drop']} pts)"),
        ("logical bits / parameter (whole model)", _num(m.sizes.bits_per_param, "")),
        ("logical bits / weight (searched layers)", f"{m.sizes.logical_bits_per_weight:.3f}"),
        ("container bits / weight", f"{m.sizes.container_bits_per_weight:.3f}"),
        ("quantized weight bytes", f"{m.sizes.quantized_weight_container_bytes:,}"),
        ("model file bytes", f"{m.sizes.file_bytes:,}"),
        ("runtime weight bytes (onnxruntime's optimized graph)", _bytes(m.kernels.get("runtime_weight_bytes"))),
        ("opset / onnxruntime", f"{m.opset} / {m.onnxruntime_version}"),
        ("weights", _variant(m.variant)),
        ("embedding tables", _tables(m)),
        *_variant_comparison(m.variant.get("validation")),
    ]
    body = (
        f"<h1>{html.escape(name)} <span class='badge {m.status}'>{m.status}</span></h1>"
        f"<p class='sub'>{html.escape(m.profile.get('description', ''))}</p>"
        + (f"<ul class='fail'>{fails}</ul>" if fails else "")
        + _table(metrics, ("measure", "value"))
        + "<div class='grid'>"
        + f"<figure><h3>Pareto front</h3>{inline_svg(front_svg)}</figure>"
        + f"<figure><h3>Per-layer bit-widths</h3>{bitmap_svg(m.bit_config)}</figure>"
        + "</div>"
        + f"<h3>Size breakdown</h3>{size_svg(m.sizes.breakdown)}"
        + "<h3>Fidelity to torch</h3>"
        + _table(_flat(m.fidelity), ("check", "value"))
        + "<h3>Kernels onnxruntime runs (its optimized graph)</h3>"
        + (f"<ul class='fail'><li>{html.escape(m.kernels['flag'])}</li></ul>" if m.kernels.get("flag") else "")
        + _table(_flat(m.kernels), ("kernel", "value"))
        + "<h3>Latency on the build host (ms, median; ratios: reference ms / package ms)</h3>"
        + _table(_flat(m.latency), ("case", "value"))
    )
    return _page(f"edgeq: {name}", body)


def _num(v: float | None, unit: str) -> str:
    """Two decimals; a value that rounds to zero prints as 0.00, not -0.00."""
    return "n/a" if v is None else f"{round(v, 2) + 0.0:.2f}{unit}"


def _flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += _flat(v, key + ".")
        else:
            rows.append((key, float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v))
    return rows


def index_report(manifests: list[Manifest], front_svg: str | None) -> str:
    rows = [
        (
            f"{m.profile['name']}",
            m.status,
            _num(m.sizes.bits_per_param, ""),
            round(m.sizes.file_bytes / 1e6, 2),
            _num(m.accuracy["onnx"], ""),
            _num(m.accuracy["float_reference"], ""),
            m.fidelity.get("exact", {}).get("max_abs_diff", "n/a"),
        )
        for m in manifests
    ]
    links = " · ".join(
        f"<a href='{html.escape(m.profile['name'])}/report.html'>{html.escape(m.profile['name'])}</a>"
        for m in manifests
    )
    body = (
        "<h1>edgeq build</h1><p class='sub'>one fine-tuning run, one verified package per device</p>"
        + _table(rows, ("device", "status", "bits/param", "file MB", "accuracy %", "float %", "max |Δlogit|"))
        + f"<p>{links}</p><h3>Pareto front</h3>{inline_svg(front_svg)}"
    )
    return _page("edgeq build", body)
