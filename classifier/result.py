"""Analysis results: mergeable counters per category, per capture and per anomaly.

The result of a capture is the merge of its batches; the result of many captures is
the merge of theirs (``a + b``), whatever the order, so work can be split freely.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SCHEMA", "AnalysisResult", "CaptureSummary", "Totals"]

#: Version of the JSON document written by :meth:`AnalysisResult.to_dict`.
SCHEMA = 1


@dataclass(frozen=True)
class Totals:
    """Packets and wire bytes."""

    packets: int
    bytes: int

    def to_dict(self) -> dict[str, int]:
        return {"packets": self.packets, "bytes": self.bytes}


@dataclass
class CaptureSummary:
    """What one capture held, and whether it could be read to the end.

    ``status`` is ``ok``, ``cut`` (ends mid-record: every complete record counted),
    ``corrupt`` (a damaged record stopped the reading: the records before it counted)
    or ``unreadable`` (not a capture at all). ``first_ts``/``last_ts`` are the earliest
    and latest packet timestamps, in seconds since the epoch.
    """

    path: str
    format: str | None = None
    link_types: list[int] = field(default_factory=list)
    packets: int = 0
    bytes: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    complete: bool = True
    error: str | None = None
    status: str = "ok"
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "link_types": list(self.link_types),
            "packets": self.packets,
            "bytes": self.bytes,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "complete": self.complete,
            "error": self.error,
        }


@dataclass
class AnalysisResult:
    """Packets and wire bytes per category, over one or more captures.

    ``packets[i]`` and ``bytes[i]`` belong to ``category_names[i]``: the rule set's
    categories in order, then ``other``, then ``non-ip``.
    """

    rules: str
    category_names: tuple[str, ...]
    packets: np.ndarray
    bytes: np.ndarray
    captures: list[CaptureSummary] = field(default_factory=list)
    anomalies: Counter[str] = field(default_factory=Counter)

    @classmethod
    def empty(cls, rules: str, category_names: tuple[str, ...]) -> AnalysisResult:
        k = len(category_names)
        return cls(rules, category_names, np.zeros(k, np.int64), np.zeros(k, np.int64))

    @property
    def categories(self) -> dict[str, Totals]:
        """Totals per category, in rule-set order, zeros included."""
        return {
            name: Totals(int(p), int(b))
            for name, p, b in zip(self.category_names, self.packets, self.bytes, strict=True)
        }

    @property
    def totals(self) -> Totals:
        return Totals(int(self.packets.sum()), int(self.bytes.sum()))

    @property
    def exit_code(self) -> int:
        """2 if a capture was unreadable, else 1 if one was corrupt, else 0."""
        statuses = {c.status for c in self.captures}
        if "unreadable" in statuses:
            return 2
        if "corrupt" in statuses:
            return 1
        return 0

    def __add__(self, other: AnalysisResult) -> AnalysisResult:
        if self.category_names != other.category_names or self.rules != other.rules:
            raise ValueError("cannot merge results of different rule sets")
        return AnalysisResult(
            self.rules,
            self.category_names,
            self.packets + other.packets,
            self.bytes + other.bytes,
            self.captures + other.captures,
            self.anomalies + other.anomalies,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (schema 1)."""
        return {
            "schema": SCHEMA,
            "rules": self.rules,
            "captures": [c.to_dict() for c in self.captures],
            "totals": self.totals.to_dict(),
            "categories": {name: t.to_dict() for name, t in self.categories.items()},
            "anomalies": dict(sorted(self.anomalies.items())),
        }
