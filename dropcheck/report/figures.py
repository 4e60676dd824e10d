"""The report's figures, drawn with matplotlib (Agg, no display) and returned as base64 PNG, ready
to embed in a single self-contained HTML file. Small on purpose: low dpi, few colours."""
from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")  # before pyplot: never try to open a window
import matplotlib.pyplot as plt

from dropcheck.report.tables import Agreement, DropRate, HeatMap, PValue

COLOUR = {"pass": "#2e7d32", "fail": "#c62828", "error": "#6a1b9a", "timeout": "#6a1b9a",
          "inconclusive": "#f9a825", "skip": "#9e9e9e"}
DPI = 80


def _png(fig: plt.Figure) -> str:
    """The figure as base64 PNG, quantized to a 64-colour palette: a third of the size, same look."""
    from PIL import Image  # pillow: a matplotlib dependency

    raw = io.BytesIO()
    fig.savefig(raw, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    raw.seek(0)
    small = io.BytesIO()
    Image.open(raw).convert("RGB").quantize(colors=64).save(small, format="PNG", optimize=True)
    return base64.b64encode(small.getvalue()).decode("ascii")


def drop_rate_figure(rows: list[DropRate]) -> str:
    """Estimated drop rate minus p, with its interval at the test's confidence, for each p."""
    fig, ax = plt.subplots(figsize=(6.5, 2.4))
    labels = [f"p={r.p:g}\n{r.device}" for r in rows]
    for i, r in enumerate(rows):
        ax.errorbar(i, r.rate - r.p, yerr=[[r.rate - r.low], [r.high - r.rate]], fmt="o", capsize=6,
                    color=COLOUR.get(r.status, "black"))
    ax.axhline(0.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(range(len(rows)), labels)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylabel("drop rate − p")
    ax.set_title("Drop rate against p (interval at the test's confidence 1 − alpha)", fontsize=9)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def heat_map_figure(maps: list[HeatMap]) -> str:
    """Per-position drop rate (block means), coloured from p − 4 sd to p + 4 sd of a block mean:
    correct dropout looks like even noise, a stripe or a tiled mask saturates."""
    fig, axes = plt.subplots(1, len(maps), figsize=(2.9 * len(maps), 2.6), squeeze=False)
    for ax, m in zip(axes[0], maps):
        half = 4 * m.sd if m.sd and math.isfinite(m.sd) else 0.05
        im = ax.imshow(m.drop_rate, cmap="RdBu_r", vmin=m.p - half, vmax=m.p + half, interpolation="nearest")
        ax.set_title(f"p={m.p:g} {m.device} ({m.status})", fontsize=9, color=COLOUR.get(m.status, "black"))
        ax.set_xticks([])
        ax.set_yticks([])
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cb.ax.tick_params(labelsize=7)
    return _png(fig)


def pvalue_figure(rows: list[PValue]) -> str:
    """Every statistical test's p-value on a −log10 scale, with its alpha as a red tick: a point
    right of its tick is a rejection."""
    height = 0.8 + 0.16 * len(rows)
    fig, ax = plt.subplots(figsize=(6.5, height))
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows):
        x = -math.log10(max(r.pvalue, 1e-300))
        ax.plot([x], [y], "o", ms=4, color=COLOUR["fail"] if r.rejected else COLOUR["pass"])
        ax.plot([-math.log10(r.alpha)] * 2, [y - 0.4, y + 0.4], color=COLOUR["fail"], lw=1)
    ax.set_yticks(ys, [r.label for r in rows], fontsize=7)
    ax.set_ylim(-0.8, len(rows) - 0.2)
    ax.set_xlabel("−log10 p-value (red tick: −log10 alpha)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def agreement_figure(rows: list[Agreement]) -> str:
    """Token agreement per decoding property (share of compared decoding steps that agree)."""
    shown = [r for r in rows if r.agreement is not None]
    fig, ax = plt.subplots(figsize=(6.5, 0.8 + 0.3 * max(1, len(shown))))
    ys = list(range(len(shown)))[::-1]
    for y, r in zip(ys, shown):
        ax.barh(y, r.agreement, color=COLOUR.get(r.status, "black"))
        ax.text(min(r.agreement, 1.0) + 0.01, y, f"{r.agreeing}/{r.compared}", va="center", fontsize=7)
    ax.set_yticks(ys, [f"{r.property_id} {r.device}" for r in shown], fontsize=7)
    ax.set_xlim(0, 1.15)
    ax.set_xlabel("token agreement (agreeing / compared steps)")
    return _png(fig)
