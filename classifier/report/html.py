"""The report as one self-contained HTML page (Jinja2, autoescaped).

Every value from the capture (paths, addresses, server names) and from the rule set
goes through Jinja2's autoescaping; the only markup not escaped is the charts' SVG,
which matplotlib writes (it escapes the text it draws) and the number spans built here
with escaped parts. Each number is a ``<span data-key="path.in.json" data-value="raw">``
holding its human form, so a reader (or a test) can check it against the JSON.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from jinja2 import Environment, select_autoescape
from markupsafe import Markup

from .model import UNKNOWN_NOTE
from .units import human_bytes, human_count, human_duration, human_rate, human_share

__all__ = ["FORMATTERS", "MAX_FILES", "lookup", "render_html", "when"]

#: Captures listed one by one on the page (all of them are in the JSON).
MAX_FILES = 25

FORMATTERS = {
    "rate": human_rate, "bps": human_rate, "bytes": human_bytes, "count": human_count,
    "streams": human_count, "users": human_count, "share": human_share,
    "duration": human_duration,
}


def lookup(doc: Any, key: str) -> Any:
    """The value at a dotted path (list items by index) of the report document."""
    value = doc
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def when(iso: str | None) -> str:
    """``2015-04-06T09:30:00.000+00:00`` as ``2015-04-06 09:30:00`` (the page says UTC)."""
    return "-" if not iso else iso[:19].replace("T", " ")


def render_html(report: dict[str, Any], charts: dict[str, str]) -> str:
    """The page for ``report`` (see :func:`~classifier.report.model.build_report`)."""
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)

    def num(key: str, kind: str) -> Markup:
        value = lookup(report, key)
        if value is None:
            return Markup('<span class="num na" data-key="{}" data-value="">n/a</span>').format(
                key)
        text = FORMATTERS[kind](value)
        return Markup(
            '<span class="num" data-key="{}" data-value="{}" data-kind="{}">{}</span>'
        ).format(key, repr(value), kind, text)

    env.globals["num"] = num
    env.globals["charts"] = {k: Markup(v) for k, v in charts.items()}  # matplotlib's SVG
    env.filters["rate"] = human_rate
    env.filters["when"] = when
    source = resources.files(__package__).joinpath("templates/report.html.j2").read_text(
        encoding="utf-8")
    return env.from_string(source).render(r=report, max_files=MAX_FILES,
                                                unknown_note=UNKNOWN_NOTE)
