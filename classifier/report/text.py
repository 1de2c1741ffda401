"""The report as JSON, Markdown and CSV: the same numbers as the HTML page."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from .model import UNKNOWN_NOTE
from .units import human_bytes, human_count, human_duration, human_rate, human_share

__all__ = ["render_csv", "render_json", "render_markdown"]


def render_json(report: dict[str, Any]) -> str:
    """The report document itself."""
    return json.dumps(report, indent=2) + "\n"


def _md(text: object) -> str:
    """A table cell: pipes, markup and line breaks from a capture cannot break the
    table or become HTML when the Markdown is rendered."""
    s = str(text)
    for a, b in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"),
                 ("\n", " "), ("\r", " "), ("`", "\\`"), ("*", "\\*"), ("_", "\\_"),
                 ("[", "\\["), ("]", "\\]")):
        s = s.replace(a, b)
    return s


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return [*out, ""]


def _rate(v: float | None) -> str:
    return "n/a" if v is None else human_rate(v)


def render_markdown(report: dict[str, Any]) -> str:
    """A Markdown document with the report's tables (the charts are in the HTML)."""
    c = report["capture"]
    out = ["# Bandwidth planning report", "",
           f"Rule set: {_md(c['rules'])}. Captured from {c['start'] or 'n/a'} to "
           f"{c['end'] or 'n/a'} (UTC).", "", "## Capture summary", ""]
    out += _table(["files", "duration", "packets", "bytes"],
                  [[human_count(c["file_count"]), human_duration(c["duration_s"]),
                    human_count(c["packets"]), human_bytes(c["bytes"])]])
    out += _table(["capture", "format", "status", "packets", "bytes"],
                  [[_md(f["path"]), _md(f["format"] or "-"),
                    _md(f["status"] + (f": {f['error']}" if f["error"] else "")),
                    human_count(f["packets"]), human_bytes(f["bytes"])] for f in c["files"]])
    anomalies = ", ".join(f"{_md(k)} {human_count(v)}" for k, v in c["anomalies"].items())
    out += [f"Anomalies: {anomalies or 'none'}.", ""]
    out += [f"Warning: {_md(w)}" for w in c["warnings"]]
    out += ["## The link, per direction", ""]
    out += _table(["direction", "bytes", "average", "peak", "95th percentile"],
                  [[d, human_bytes(v["bytes"]), human_rate(v["average_bps"]),
                    human_rate(v["peak_bps"]), human_rate(v["p95_bps"])]
                   for d, v in report["links"].items()])
    out += ["## Traffic per category and direction", ""]
    out += _table(["category", "direction", "packets", "bytes", "share", "average", "peak",
                   "95th pct."],
                  [[_md(t["category"]), t["direction"], human_count(t["packets"]),
                    human_bytes(t["bytes"]), human_share(t["share"]),
                    human_rate(t["average_bps"]), human_rate(t["peak_bps"]),
                    human_rate(t["p95_bps"])] for t in report["traffic"]])
    out += ["## Concurrent media streams", ""]
    out += _table(["category", "peak", "95th percentile", "average", "stream-seconds"],
                  [[k, human_count(v["peak"]), human_count(v["p95"]), human_count(v["average"]),
                    human_count(v["stream_seconds"])] for k, v in report["streams"].items()])
    out += ["## Measured rate per stream and Microsoft's guidance", ""]
    rows = []
    for k, p in report["per_stream"].items():
        rows.append([k, "measured", _rate(p["upload_bps"]), _rate(p["download_bps"])])
        for g in p["guidance"]:
            for lv in ("minimum", "recommended", "best"):
                f = g[f"{lv}_kbps"]
                rows.append([k, f"Teams {g['scenario']}, {lv}", f"{f['upload']} kbit/s",
                             f"{f['download']} kbit/s"])
        if p["rule_of_thumb_kbps"]:
            rows.append([k, "Skype for Business rule of thumb", f"{p['rule_of_thumb_kbps']} "
                         "kbit/s", f"{p['rule_of_thumb_kbps']} kbit/s"])
        if not p["modality_known"]:
            rows.append([k, UNKNOWN_NOTE, "", ""])
    out += _table(["category", "figure", "upload", "download"], rows)
    out += [f"Source: {report['guidance_source']}.", ""]
    out += ["## Link capacity needed", ""]
    proj = report["projection"]
    if proj is None:
        out += ["No projection: give --users N and --plan-users M.", ""]
    else:
        out += [f"From {human_count(proj['users'])} users to "
                f"{human_count(proj['plan_users'])} users, Microsoft's {proj['level']} "
                "figures.", ""]
        out += _table(["direction", "scaled 95th percentile", "bottom-up"],
                      [[d, human_rate(v["scaled"]["value_bps"]),
                        human_rate(v["bottom_up"]["value_bps"])]
                       for d, v in proj["directions"].items()])
        for d, both in proj["directions"].items():
            for m in ("scaled", "bottom_up"):
                out += [f"### {d}, {m.replace('_', '-')}", ""]
                out += _table(["figure", "value", "assumption"],
                              [[_md(s["label"]), _value(s["value"], s["unit"]),
                                _md(s["assumption"])] for s in both[m]["steps"]])
    out += ["## QoS marking audit", ""]
    out += _table(["category", "expected DSCP", "upload marked", "download marked",
                   "flows ok", "unmarked", "wrong"],
                  [[k, str(q["expected_dscp"]), _share(q["upload"]), _share(q["download"]),
                    human_count(q["flows"]["ok"]), human_count(q["flows"]["missing"]),
                    human_count(q["flows"]["wrong"])] for k, q in report["qos"].items()])
    out += ["## Top flows", ""]
    out += _table(["client", "server", "server name", "category", "bytes up", "bytes down",
                   "duration", "average"],
                  [[_md(f"{f['client_addr']}:{f['client_port']}"),
                    _md(f"{f['server_addr']}:{f['server_port']}"), _md(f["server_name"] or ""),
                    _md(f["category"]), human_bytes(f["bytes_up"]),
                    human_bytes(f["bytes_down"]), human_duration(f["duration_s"]),
                    _rate(f["average_bps"])] for f in report["top_flows"]])
    out += ["## Top talkers", ""]
    out += _table(["address", "name", "side", "sent", "received", "total", "flows"],
                  [[_md(t["address"]), _md(t["name"] or ""),
                    "inside" if t["inside"] else "outside", human_bytes(t["sent"]),
                    human_bytes(t["received"]), human_bytes(t["bytes"]),
                    human_count(t["flows"])] for t in report["top_talkers"]])
    return "\n".join(out).rstrip("\n") + "\n"


def _share(entry: dict[str, Any]) -> str:
    if entry["share"] is None:
        return "no packets"
    return f"{human_share(entry['share'])} of {human_count(entry['packets'])}"


def _value(value: float, unit: str) -> str:
    return human_rate(value) if unit == "bps" else human_count(round(value, 2))


#: Columns of ``--format csv``: one row per figure, easy to filter and pivot.
CSV_COLUMNS = ("section", "item", "direction", "metric", "value", "unit")


def render_csv(report: dict[str, Any]) -> str:
    """Every figure of the report as one row (raw values: bits per second, bytes)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    c = report["capture"]
    for metric, unit in (("file_count", "files"), ("duration_s", "s"),
                         ("packets", "packets"), ("bytes", "bytes")):
        w.writerow(["capture", "", "", metric, c[metric], unit])
    for name, n in c["anomalies"].items():
        w.writerow(["anomaly", name, "", "count", n, "packets"])
    for d, v in report["links"].items():
        for metric in ("bytes", "average_bps", "peak_bps", "p95_bps"):
            w.writerow(["link", "", d, metric, v[metric], _unit(metric)])
    for t in report["traffic"]:
        for metric in ("packets", "bytes", "share", "average_bps", "peak_bps", "p95_bps"):
            w.writerow(["traffic", t["category"], t["direction"], metric, t[metric],
                        _unit(metric)])
    for k, v in report["streams"].items():
        for metric in ("peak", "p95", "average", "stream_seconds"):
            w.writerow(["streams", k, "", metric, v[metric],
                        "s" if metric == "stream_seconds" else "streams"])
    for k, p in report["per_stream"].items():
        for d in ("upload", "download"):
            w.writerow(["per_stream", k, d, "measured_bps", _blank(p[f"{d}_bps"]), "bit/s"])
    proj = report["projection"]
    if proj is not None:
        for d, both in proj["directions"].items():
            for m in ("scaled", "bottom_up"):
                w.writerow([f"projection_{m}", f"{proj['plan_users']} users", d,
                            "needed_bps", both[m]["value_bps"], "bit/s"])
    for k, q in report["qos"].items():
        for d in ("upload", "download"):
            w.writerow(["qos", k, d, "marked_share", _blank(q[d]["share"]), "fraction"])
    for f in report["top_flows"]:
        item = f"{f['client_addr']}:{f['client_port']} {f['server_addr']}:{f['server_port']}"
        w.writerow(["top_flow", item, "upload", "bytes", f["bytes_up"], "bytes"])
        w.writerow(["top_flow", item, "download", "bytes", f["bytes_down"], "bytes"])
    for t in report["top_talkers"]:
        w.writerow(["top_talker", t["address"], "sent", "bytes", t["sent"], "bytes"])
        w.writerow(["top_talker", t["address"], "received", "bytes", t["received"], "bytes"])
    return buf.getvalue()


def _unit(metric: str) -> str:
    return {"packets": "packets", "bytes": "bytes", "share": "fraction"}.get(metric, "bit/s")


def _blank(v: object) -> object:
    return "" if v is None else v
