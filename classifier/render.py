"""Renderers: a result as JSON or CSV text. They only read the result."""

from __future__ import annotations

import csv
import io
import json

from .result import AnalysisResult

__all__ = ["share", "to_csv", "to_json"]


def to_json(result: AnalysisResult) -> str:
    """The JSON document (see :meth:`AnalysisResult.to_dict`)."""
    return json.dumps(result.to_dict(), indent=2) + "\n"


def share(part: int, whole: int) -> float:
    """``part`` as a fraction of ``whole`` (0 when the whole is 0)."""
    return part / whole if whole else 0.0


def to_csv(result: AnalysisResult) -> str:
    """One row per category: packets, wire bytes and their shares of the totals."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["category", "packets", "bytes", "packets_share", "bytes_share"])
    totals = result.totals
    for name, t in result.categories.items():
        writer.writerow([
            name, t.packets, t.bytes,
            f"{share(t.packets, totals.packets):.6f}", f"{share(t.bytes, totals.bytes):.6f}",
        ])
    return out.getvalue()
