"""The bandwidth-planning report: what the link needs today, and for more users.

    >>> from classifier.pipeline import Options, analyze
    >>> from classifier.report import TopFlows, build_report, render_report
    >>> top = TopFlows(categories)                                     # doctest: +SKIP
    >>> result = analyze(paths, options=Options(interval_ns=10**9,     # doctest: +SKIP
    ...                                         flow_sink=top))
    >>> report = build_report(result, top, users=40, plan_users=200)  # doctest: +SKIP
    >>> html = render_report(result, report, "html")                   # doctest: +SKIP

:func:`build_report` computes every number once (the JSON document); the renderers
only format it. matplotlib is imported only to draw the HTML page's charts.
"""

from __future__ import annotations

from typing import Any

from ..result import AnalysisResult
from .collect import TopFlows
from .model import build_report
from .projection import Estimate, Step, bottom_up, scaled
from .text import render_csv, render_json, render_markdown

__all__ = ["FORMATS", "Estimate", "Step", "TopFlows", "bottom_up", "build_report",
           "render_report", "scaled"]

FORMATS = ("html", "md", "json", "csv")


def render_report(result: AnalysisResult, report: dict[str, Any], fmt: str) -> str:
    """``report`` (from ``result``) as ``html``, ``md``, ``json`` or ``csv`` text."""
    if fmt == "html":
        from .charts import render_charts
        from .html import render_html

        return render_html(report, render_charts(result, report))
    renderers = {"md": render_markdown, "json": render_json, "csv": render_csv}
    if fmt not in renderers:
        raise ValueError(f"unknown report format {fmt!r} (one of {', '.join(FORMATS)})")
    return renderers[fmt](report)
