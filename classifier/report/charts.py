"""Charts as inline SVG, drawn with matplotlib (Agg, imported only here).

Text stays text (``svg.fonttype: none``: no embedded or fetched fonts), the metadata
block and DOCTYPE are dropped, and element ids get a per-chart prefix so that several
charts can live in one page without clashing.
"""

from __future__ import annotations

import html
import io
import re
from typing import Any

import numpy as np

from ..measures import DIRECTIONS
from ..result import AnalysisResult
from .model import LINK, STREAMS
from .units import human_duration

__all__ = ["render_charts"]

#: A palette that stays distinct in print and for common colour-vision deficiencies.
COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
          "#000000", "#999999", "#882255", "#44AA99", "#117733", "#332288", "#AA4499")


#: The rate axis's unit: the largest whose value the busiest interval reaches.
RATE_UNITS = ((1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s"), (1.0, "bit/s"))

#: Intervals drawn at most per chart.
MAX_POINTS = 1500


def _time_axis(bins: np.ndarray, interval_ns: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Every interval from the first bin to the last, as time since the start in a
    readable unit; and the index of each present bin in that range. Long gaps are
    collapsed to their two edges so the point count stays bounded."""
    start = int(bins[0])
    rel = bins - start
    # Points: each present bin, plus zero points at the edges of every gap.
    pts = [int(rel[0])]
    for a, b in zip(rel[:-1].tolist(), rel[1:].tolist(), strict=True):
        if b - a > 1:
            pts += [a + 1, b - 1] if b - a > 2 else [a + 1]
        pts.append(b)
    pts.append(int(rel[-1]) + 1)  # the end of the last interval
    x = np.array(sorted(set(pts)), np.int64)
    span_s = (int(rel[-1]) + 1) * interval_ns / 1e9
    scale, unit = ((3600.0, "h") if span_s > 7200 else (60.0, "min") if span_s > 120
                   else (1.0, "s"))
    seconds = x * interval_ns / 1e9
    return seconds / scale, np.searchsorted(x, rel), unit


def _interval(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 60 else human_duration(seconds)


def _svg(fig: Any, prefix: str, title: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)
    # Scale with the page (the viewBox keeps the proportions).
    text = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r"<svg\1", text, count=1)
    return text.replace("<svg", f'<svg role="img" aria-label="{html.escape(title)}"', 1)


def render_charts(result: AnalysisResult, report: dict[str, Any]) -> dict[str, str]:
    """``{"rates": svg, "streams": svg}``: stacked rates per category (upload and
    download), and concurrent media streams with their peak and 95th percentile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    s = result.series
    assert s is not None
    bins, rows = s.ordered()
    if bins.size and int(bins[-1] - bins[0]) + 1 > MAX_POINTS:
        # Long captures: draw over longer intervals (bytes add up, streams take the
        # busiest interval), so the page stays small; the axis says which interval.
        s = s.coarsened(-(-(int(bins[-1] - bins[0]) + 1) // MAX_POINTS))
        bins, rows = s.ordered()
    names = result.category_names
    out: dict[str, str] = {}
    interval_s = s.interval_ns / 1e9
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "o365-traffic",
                         "font.size": 9, "font.family": "sans-serif",
                         "axes.spines.top": False, "axes.spines.right": False}):
        fig, axes = plt.subplots(2, 1, figsize=(7.2, 5.2), sharex=True, layout="constrained")
        if bins.size:
            x, at, unit = _time_axis(bins, s.interval_ns)
        else:
            x, at, unit = np.zeros(1), np.zeros(0, np.int64), "s"
        top = float(s.bytes[rows][:, :, [DIRECTIONS.index(d) for d in LINK]].sum(axis=1).max()
                    * 8 / interval_s) if bins.size else 0.0
        scale, rate_unit = next(((f, u) for f, u in RATE_UNITS if top >= f), RATE_UNITS[-1])
        for ax, d in zip(axes, LINK, strict=True):
            j = DIRECTIONS.index(d)
            ys, labels, colors = [], [], []
            for i, c in enumerate(names):
                if not s.bytes[rows, i, j].any():
                    continue
                y = np.zeros(x.size)
                y[at] = s.bytes[rows, i, j] * 8 / interval_s / scale
                ys.append(y)
                labels.append(c)
                colors.append(COLORS[i % len(COLORS)])
            if ys:
                ax.stackplot(x, ys, labels=labels, colors=colors, step="post")
                ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8,
                          title="category", title_fontsize=8, frameon=False)
            else:
                ax.text(0.5, 0.5, f"no {d} traffic", ha="center", va="center",
                        transform=ax.transAxes)
            ax.set_title(f"{d.capitalize()} rate by category (stacked)")
            ax.set_ylabel(rate_unit)
            ax.set_ylim(bottom=0)
            ax.grid(axis="y", alpha=0.3)
        start = (report["capture"]["start"] or "")[:19].replace("T", " ")
        axes[-1].set_xlabel(f"time since {start} UTC ({unit}); "
                            f"{_interval(interval_s)} intervals")
        fig.suptitle("Bit rate per category over time")
        out["rates"] = _svg(fig, "chart-rates", "Bit rate per category over time")
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(7.2, 3.0), layout="constrained")
        drawn = False
        for c in STREAMS:
            if c not in names or c not in report["streams"]:
                continue
            i = names.index(c)
            color = COLORS[i % len(COLORS)]
            y = np.zeros(x.size)
            y[at] = s.active[rows, i]
            st = report["streams"][c]
            ax.step(x, y, where="post", color=color,
                    label=f"{c}: peak {st['peak']}, 95th pct. {st['p95']:g}")
            ax.axhline(st["p95"], color=color, linestyle="--", linewidth=0.8)
            drawn = True
        if drawn:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8,
                      title="streams (dashed: 95th pct.)", title_fontsize=8, frameon=False)
        else:
            ax.text(0.5, 0.5, "no media categories in the rule set", ha="center",
                    va="center", transform=ax.transAxes)
        ax.set_title("Concurrent audio, video and sharing streams")
        ax.set_ylabel("streams")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(f"time since start ({unit}); {_interval(interval_s)} intervals"
                      + (" (busiest of each)" if s is not result.series else ""))
        ax.grid(axis="y", alpha=0.3)
        out["streams"] = _svg(fig, "chart-streams",
                              "Concurrent audio, video and sharing streams")
        plt.close(fig)
    return out
