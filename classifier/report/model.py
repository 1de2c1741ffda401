"""The report's numbers, computed once from an analysis result and the flow records.

:func:`build_report` returns a plain JSON-ready document: ``--format json`` writes it
as it is, and every other format only formats its values (the HTML page carries each
raw value beside its human form, so the two can be compared).
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..measures import DIRECTIONS, EXPECTED_DSCP, _percentile_with_zeros
from ..result import AnalysisResult
from .collect import TopFlows
from .guidance import LEVELS, RULE_OF_THUMB, SOURCE, TEAMS, figure_for
from .projection import bottom_up, scaled

__all__ = ["LINK", "MEDIA", "REPORT_SCHEMA", "STREAMS", "UNKNOWN_MODALITY", "UNKNOWN_NOTE",
           "build_report"]

REPORT_SCHEMA = 1
#: The directions that cross the link between the user's network and the outside.
LINK = ("upload", "download")
#: Media categories: counted as concurrent streams, compared with per-stream guidance.
MEDIA = tuple(EXPECTED_DSCP)
#: Media whose modality the rules cannot tell (calls found by the relays' addresses or by
#: a signature, as ``teams.toml`` has them): counted as concurrent streams, but no
#: per-stream figure applies, so the bottom-up projection scales their measured rate.
UNKNOWN_MODALITY = ("media",)
#: Every category counted as concurrent streams.
STREAMS = MEDIA + UNKNOWN_MODALITY
#: What the per-stream tables say of a category in UNKNOWN_MODALITY.
UNKNOWN_NOTE = ("modality unknown (audio, video or sharing): no per-stream figure applies; "
                "the projection scales its measured rate")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _stats(values: np.ndarray, span: int) -> dict[str, float]:
    """Average, peak and 95th percentile of one value per row, over ``span``
    intervals (the intervals without a row count as 0), as the analysis computes rates."""
    if span == 0 or values.size == 0:
        return {"average": 0.0, "peak": 0.0, "p95": 0.0}
    v = values.astype(np.float64)
    p95 = _percentile_with_zeros(v[:, None], span - v.size, 95)
    return {"average": float(v.sum() / span), "peak": float(v.max()), "p95": float(p95[0])}


def _observed(result: AnalysisResult, interval_ns: int, bins: np.ndarray) -> int:
    """The intervals the captures cover: from each capture's first packet to its last
    (the time between captures was not observed, so it is not counted as idle)."""
    spans = [(round(c.first_ts * 1e9) // interval_ns,
              round(c.last_ts * 1e9) // interval_ns)
             for c in result.captures if c.first_ts is not None and c.last_ts is not None]
    spans += [(b, b) for b in bins.tolist()]  # a bin a rounding put outside its span
    total, end = 0, None
    for lo, hi in sorted(spans):
        if end is None or lo > end:
            total += hi - lo + 1
            end = hi
        elif hi > end:
            total += hi - end
            end = hi
    return total


def _round(x: float) -> float:
    return round(float(x), 3)


def build_report(result: AnalysisResult, top: TopFlows | None = None, *,
                 users: int | None = None, plan_users: int | None = None,
                 level: str = "recommended") -> dict[str, Any]:
    """The report document (see the module docstring). ``users``: the users behind
    the capture; ``plan_users``: the target (default: ``users``, i.e. today's need);
    ``level``: which of Microsoft's per-stream figures the projection uses."""
    if level not in LEVELS:
        raise ValueError(f"unknown guidance level {level!r} (one of {', '.join(LEVELS)})")
    if plan_users is not None and users is None:
        raise ValueError("--plan-users needs --users (the users behind the capture)")
    if (users is not None and users < 1) or (plan_users is not None and plan_users < 1):
        raise ValueError("--users and --plan-users must be at least 1")
    doc = result.to_dict()
    if result.series is None or result.directions is None:
        raise ValueError("a report needs the detailed analysis (not --categories-only)")
    s = result.series
    names = result.category_names
    interval_s = s.interval_ns / 1e9
    bins, rows = s.ordered()
    span = _observed(result, s.interval_ns, bins)
    bps = s.bytes[rows] * 8 / interval_s  # [rows, categories, directions]
    media = [c for c in MEDIA if c in names]
    unknown = [c for c in UNKNOWN_MODALITY if c in names]
    stream_idx = [names.index(c) for c in media + unknown]
    other_idx = [i for i in range(len(names)) if i not in stream_idx]

    totals = result.totals
    firsts = [c.first_ts for c in result.captures if c.first_ts is not None]
    lasts = [c.last_ts for c in result.captures if c.last_ts is not None]
    start, end = (min(firsts), max(lasts)) if firsts else (None, None)
    warnings = [w for c in result.captures for w in c.warnings]
    warnings += [c.error for c in result.captures if c.error]
    capture = {
        "files": [{"path": c.path, "format": c.format, "status": c.status,
                   "packets": c.packets, "bytes": c.bytes, "start": _iso(c.first_ts),
                   "end": _iso(c.last_ts), "error": c.error} for c in result.captures],
        "file_count": len(result.captures), "start": _iso(start), "end": _iso(end),
        "duration_s": _round(end - start) if start is not None and end is not None else 0.0,
        "packets": totals.packets, "bytes": totals.bytes,
        "anomalies": dict(sorted(result.anomalies.items())),
        "warnings": warnings, "rules": result.rules, "inside": list(result.inside),
        "interval_s": interval_s, "intervals": span,
    }

    traffic = []
    for i, c in enumerate(names):
        for j, d in enumerate(DIRECTIONS):
            packets, nbytes = (int(x) for x in result.directions[i, j])
            if not packets:
                continue
            st = _stats(bps[:, i, j], span)
            traffic.append({
                "category": c, "direction": d, "packets": packets, "bytes": nbytes,
                "share": round(nbytes / totals.bytes, 6) if totals.bytes else 0.0,
                "average_bps": _round(st["average"]), "peak_bps": _round(st["peak"]),
                "p95_bps": _round(st["p95"]),
            })

    links: dict[str, Any] = {}
    non_media: dict[str, float] = {}
    unknown_p95: dict[str, dict[str, float]] = {}
    for d in LINK:
        j = DIRECTIONS.index(d)
        st = _stats(bps[:, :, j].sum(axis=1), span)
        links[d] = {"bytes": int(result.directions[:, j, 1].sum()),
                    "average_bps": _round(st["average"]), "peak_bps": _round(st["peak"]),
                    "p95_bps": _round(st["p95"])}
        non_media[d] = _round(_stats(bps[:, other_idx, j].sum(axis=1), span)["p95"])
        unknown_p95[d] = {c: _round(_stats(bps[:, names.index(c), j], span)["p95"])
                          for c in unknown}

    streams: dict[str, Any] = {}
    per_stream: dict[str, Any] = {}
    for c, i in zip(media + unknown, stream_idx, strict=True):
        active = s.active[rows, i]
        st = _stats(active, span)
        stream_s = float(active.sum()) * interval_s
        streams[c] = {"peak": int(st["peak"]), "p95": _round(st["p95"]),
                      "average": _round(st["average"]), "stream_seconds": _round(stream_s)}
        entry: dict[str, Any] = {}
        for d in LINK:
            nbytes = int(result.directions[i, DIRECTIONS.index(d), 1])
            entry[f"{d}_bps"] = _round(nbytes * 8 / stream_s) if stream_s else None
        entry["guidance"] = [
            {"scenario": row.scenario,
             **{f"{lv}_kbps": {"upload": row.kbps(lv, "upload"),
                               "download": row.kbps(lv, "download")} for lv in LEVELS}}
            for row in TEAMS if row.category == c]
        entry["rule_of_thumb_kbps"] = RULE_OF_THUMB.get(c)
        entry["modality_known"] = c in media
        per_stream[c] = entry

    projection: dict[str, Any] | None = None
    if users is not None:
        target = plan_users if plan_users is not None else users
        projection = {"users": users, "plan_users": target, "level": level, "directions": {}}
        for d in LINK:
            a = scaled(links[d]["p95_bps"], users, target, direction=d, interval_s=interval_s)
            b = bottom_up({c: streams[c]["p95"] for c in media},
                          {c: figure_for(c).kbps(level, d) for c in media},
                          non_media[d], users, target, direction=d, level=level,
                          unknown_p95_bps=unknown_p95[d])
            projection["directions"][d] = {"scaled": a.to_dict(), "bottom_up": b.to_dict()}

    qos: dict[str, Any] = {}
    for c, entry in doc.get("qos", {}).get("categories", {}).items():
        qos[c] = {**entry, "flows": doc["qos"]["flows"][c]}

    report: dict[str, Any] = {
        "report_schema": REPORT_SCHEMA,
        "capture": capture,
        "traffic": traffic,
        "links": links,
        "non_media_p95_bps": non_media,
        "unknown_modality_p95_bps": unknown_p95,
        "streams": streams,
        "per_stream": per_stream,
        "guidance_source": SOURCE,
        "projection": projection,
        "qos": qos,
        "qos_reported": doc.get("qos", {}).get("reported", [])[:10],
        "flows_summary": doc.get("flows_summary"),
    }
    report.update(_top(top, result.inside))
    return report


def _top(top: TopFlows | None, inside: tuple[str, ...]) -> dict[str, Any]:
    if top is None:
        return {"top_flows": [], "top_talkers": [], "talkers_pruned": 0}
    nets = [ipaddress.ip_network(n) for n in inside]

    def is_inside(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip.version == n.version and ip in n for n in nets)

    flows = []
    for f in top.flows:
        duration = f["last_ts"] - f["first_ts"]
        flows.append({
            **{k: f[k] for k in ("protocol", "client_addr", "client_port", "server_addr",
                                 "server_port", "server_name", "category", "packets",
                                 "bytes_up", "bytes_down", "bytes")},
            "start": _iso(f["first_ts"]), "duration_s": _round(duration),
            "average_bps": _round(f["bytes"] * 8 / duration) if duration > 0 else None,
        })
    talkers = [{"address": addr, "name": t.name, "inside": is_inside(addr), "sent": t.sent,
                "received": t.received, "bytes": t.bytes, "flows": t.flows}
               for addr, t in top.talkers()]
    return {"top_flows": flows, "top_talkers": talkers, "talkers_pruned": top.pruned}
