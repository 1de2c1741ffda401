"""Analysis results: mergeable counters per category, per capture and per anomaly.

The result of a capture is the merge of its batches; the result of many captures is
the merge of theirs (``a + b``), whatever the order, so work can be split freely.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .flows import FlowSummary
from .measures import DIRECTIONS, EXPECTED_DSCP, Series

__all__ = ["SCHEMA", "AnalysisResult", "CaptureSummary", "Totals", "add_optional"]

#: Version of the JSON document written by :meth:`AnalysisResult.to_dict`.
SCHEMA = 2


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
    #: [category, direction, packets/bytes]
    directions: np.ndarray | None = None
    #: [category, direction, packets/marked as recommended]
    qos: np.ndarray | None = None
    series: Series | None = None
    show_series: bool = False
    flows: FlowSummary | None = None
    inside: tuple[str, ...] = ()
    #: The summary of flow records made by ``Options.flow_digest`` (not in the JSON).
    digest: Any = None

    @classmethod
    def empty(cls, rules: str, category_names: tuple[str, ...], *,
              interval_ns: int = 1_000_000_000, show_series: bool = False,
              inside: tuple[str, ...] = (), details: bool = True) -> AnalysisResult:
        k, d = len(category_names), len(DIRECTIONS)
        if not details:
            return cls(rules, category_names, np.zeros(k, np.int64), np.zeros(k, np.int64))
        return cls(
            rules, category_names, np.zeros(k, np.int64), np.zeros(k, np.int64),
            directions=np.zeros((k, d, 2), np.int64), qos=np.zeros((k, d, 2), np.int64),
            series=Series(interval_ns, k), show_series=show_series,
            flows=FlowSummary(category_names, EXPECTED_DSCP), inside=inside,
        )

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
            directions=add_optional(self.directions, other.directions),
            qos=add_optional(self.qos, other.qos),
            series=add_optional(self.series, other.series),
            show_series=self.show_series or other.show_series,
            flows=add_optional(self.flows, other.flows),
            inside=self.inside or other.inside,
            digest=add_optional(self.digest, other.digest),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (schema 2: schema 1's keys, then directions, flows,
        rates, QoS and, when asked for, the time series)."""
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "rules": self.rules,
            "captures": [c.to_dict() for c in self.captures],
            "totals": self.totals.to_dict(),
            "categories": {name: t.to_dict() for name, t in self.categories.items()},
            "anomalies": dict(sorted(self.anomalies.items())),
        }
        names = self.category_names
        if self.directions is not None:
            doc["inside"] = list(self.inside)
            doc["directions"] = {
                c: {d: {"packets": int(self.directions[i, j, 0]),
                        "bytes": int(self.directions[i, j, 1])}
                    for j, d in enumerate(DIRECTIONS)}
                for i, c in enumerate(names)
            }
        if self.flows is not None:
            f = self.flows
            doc["flows_summary"] = {
                "flows": int(f.flows.sum()),
                "evicted": f.evicted,
                "categories": {c: int(f.flows[i]) for i, c in enumerate(names)},
            }
        if self.series is not None:
            doc["rates"] = self._rates()
        if self.qos is not None and self.flows is not None:
            doc["qos"] = self._qos()
        if self.series is not None and self.show_series:
            doc["series"] = self._series()
        return doc

    def _rates(self) -> dict[str, Any]:
        assert self.series is not None
        r = self.series.rates()
        return {
            "interval_s": self.series.interval_ns / 1e9,
            "categories": {
                c: {d: {"average_bps": round(float(r[i, j, 0]), 3),
                        "peak_bps": round(float(r[i, j, 1]), 3),
                        "p95_bps": round(float(r[i, j, 2]), 3)}
                    for j, d in enumerate(DIRECTIONS)}
                for i, c in enumerate(self.category_names)
            },
        }

    def _qos(self) -> dict[str, Any]:
        assert self.qos is not None and self.flows is not None
        out: dict[str, Any] = {"categories": {}, "flows": {}, "reported": self.flows.reported}
        for name, dscp in EXPECTED_DSCP.items():
            if name not in self.category_names:
                continue
            i = self.category_names.index(name)
            entry: dict[str, Any] = {"expected_dscp": dscp}
            for j, d in enumerate(DIRECTIONS[:2]):
                packets, marked = (int(x) for x in self.qos[i, j])
                entry[d] = {"packets": packets, "marked": marked,
                            "share": round(marked / packets, 6) if packets else None}
            out["categories"][name] = entry
            ok, missing, wrong = (int(x) for x in self.flows.verdicts[i])
            out["flows"][name] = {"ok": ok, "missing": missing, "wrong": wrong}
        return out

    def _series(self) -> dict[str, Any]:
        """Columns over the intervals that saw packets (the others are empty)."""
        s = self.series
        assert s is not None
        bins, rows = s.ordered()
        names = self.category_names
        return {
            "interval_s": s.interval_ns / 1e9,
            "start": [int(b) * s.interval_ns / 1e9 for b in bins.tolist()],
            "packets": {c: {d: s.packets[rows, i, j].tolist() for j, d in enumerate(DIRECTIONS)}
                        for i, c in enumerate(names)},
            "bytes": {c: {d: s.bytes[rows, i, j].tolist() for j, d in enumerate(DIRECTIONS)}
                      for i, c in enumerate(names)},
            "active_flows": {c: s.active[rows, i].tolist() for i, c in enumerate(names)},
        }


def add_optional(a: Any, b: Any) -> Any:
    """``a + b``, where either may be None (absent)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b
