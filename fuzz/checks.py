"""Oracles shared by the fuzzing harnesses, the corpus replay and the regression tests.

A capture or rule file may be anything at all; what the tool does with it must still
hold these properties:

- the only exceptions are :class:`~classifier.errors.O365TrafficError` subclasses;
- the record walk yields sane batches (offsets and captured lengths inside the buffer);
- every packet the reader yields is in the result, in exactly one category, and the
  category sums equal the totals (no packet disappears, none is counted twice);
- the capture summary agrees with what the reader saw: complete, cut at a byte
  offset (a warning naming it) or stopped by an error (one line naming the file);
- a rule set that loads classifies like the plain-Python reference
  (:meth:`~classifier.rules.RuleSet.classify_one`).

A broken property raises :class:`Finding`; anything else that escapes is a crash.
"""

from __future__ import annotations

import json
import re
import tomllib
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifier.decode import FLAG_PORTS, Headers
from classifier.errors import O365TrafficError, RulesError
from classifier.lookup import CompiledRules, compile_rules
from classifier.pipeline import analyze_capture
from classifier.render import to_csv, to_json
from classifier.result import AnalysisResult
from classifier.rules import PROTOCOLS, RuleSet, load_rules, parse_rules
from classifier.sources import MAX_CAPLEN, Batch, open_capture

__all__ = [
    "Finding",
    "ReadOutcome",
    "check_batch",
    "check_capture",
    "check_modes_agree",
    "check_result",
    "check_rules_bytes",
    "check_ruleset",
    "read_capture",
    "signature",
]

STATUSES = {"ok", "cut", "corrupt", "unreadable"}
_AT_BYTE = re.compile(r" at byte (\d+)")


class Finding(AssertionError):
    """A property of the tool broke (not an exception of its own)."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        super().__init__(f"{kind}: {detail}")


def _require(ok: bool, kind: str, detail: str) -> None:
    if not ok:
        raise Finding(kind, detail)


def signature(exc: BaseException) -> str:
    """A short name for a failure, stable across inputs that hit the same bug: the
    exception type and the innermost ``classifier`` frame (or the broken property)."""
    if isinstance(exc, Finding):
        return f"Finding:{exc.kind}"
    frames = traceback.extract_tb(exc.__traceback__)
    inner = [f for f in frames if "/classifier/" in f.filename.replace("\\", "/")]
    where = inner[-1] if inner else (frames[-1] if frames else None)
    if where is None:
        return type(exc).__name__
    name = where.filename.replace("\\", "/").rsplit("/classifier/", 1)[-1]
    return f"{type(exc).__name__}:{name}:{where.name}"


# ---- captures ------------------------------------------------------------------------


@dataclass
class ReadOutcome:
    """What walking a capture's records gave."""

    packets: int
    bytes: int
    error: O365TrafficError | None
    complete: bool
    cut_at: int | None


def check_batch(batch: Batch) -> None:
    """Offsets, lengths and columns of a batch are consistent with its buffer."""
    n = len(batch)
    _require(n > 0, "empty-batch", "a batch without packets was yielded")
    for name in ("caplen", "wirelen", "ts", "linktype"):
        col = getattr(batch, name)
        _require(col.shape == (n,), "batch-columns", f"{name} has shape {col.shape}, not {n}")
    size = batch.buf.shape[0]
    off, cap = batch.offset, batch.caplen
    _require(bool((cap >= 0).all()), "negative-caplen",
             f"captured lengths {sorted(set(cap[cap < 0].tolist()))} below 0")
    _require(bool((cap <= MAX_CAPLEN).all()), "caplen-over-max",
             f"captured length {int(cap.max())} over {MAX_CAPLEN}")
    _require(bool((off >= 0).all()) and bool((off + cap <= size).all()), "packet-outside-buffer",
             "a packet's bytes lie outside the buffer")
    _require(bool((batch.wirelen >= 0).all()), "negative-wirelen", "wire length below 0")
    lt = batch.linktype
    _require(bool(((lt >= 0) & (lt <= 0xFFFF)).all()), "bad-linktype", "link type out of range")


def read_capture(path: str, *, compiled: bool) -> ReadOutcome:
    """Walk every record of ``path``; capture errors end the walk and are returned."""
    try:
        reader = open_capture(path, compiled=compiled)
    except O365TrafficError as exc:
        return ReadOutcome(0, 0, exc, False, None)
    packets = nbytes = 0
    error: O365TrafficError | None = None
    try:
        for batch in reader:
            check_batch(batch)
            packets += len(batch)
            nbytes += int(batch.wirelen.sum())
    except O365TrafficError as exc:
        error = exc
    finally:
        reader.source.close()
    return ReadOutcome(packets, nbytes, error, reader.complete and error is None, reader.cut_at)


def check_result(result: AnalysisResult, path: str) -> None:
    """Totals add up, every category is non-negative, and the summary is coherent."""
    _require(len(result.captures) == 1, "summaries", f"{len(result.captures)} summaries")
    summary = result.captures[0]
    packets, nbytes = result.packets, result.bytes
    _require(bool((packets >= 0).all()) and bool((nbytes >= 0).all()), "negative-category",
             f"packets {packets.tolist()} bytes {nbytes.tolist()}")
    doc = result.to_dict()
    cats = doc["categories"]
    _require(list(cats) == list(result.category_names), "category-order", str(list(cats)))
    _require(sum(c["packets"] for c in cats.values()) == doc["totals"]["packets"]
             == summary.packets, "category-sum-packets",
             f"categories {sum(c['packets'] for c in cats.values())}, totals "
             f"{doc['totals']['packets']}, summary {summary.packets}")
    _require(sum(c["bytes"] for c in cats.values()) == doc["totals"]["bytes"] == summary.bytes,
             "category-sum-bytes", "category bytes do not add up to the totals")
    _require(summary.status in STATUSES, "status", summary.status)
    if summary.status == "ok":
        _require(summary.complete and summary.error is None, "status-ok",
                 f"complete={summary.complete} error={summary.error!r}")
    else:
        _require(not summary.complete, "status-incomplete",
                 f"status {summary.status} but complete")
    if summary.status == "cut":
        _require(summary.error is None, "status-cut", f"error {summary.error!r}")
        _require(any(_AT_BYTE.search(w) for w in summary.warnings), "cut-without-offset",
                 f"warnings {summary.warnings}")
    if summary.status in ("corrupt", "unreadable"):
        _require(summary.error is not None, "status-error", "no error line")
    for line in [summary.error or "", *summary.warnings]:
        _require("\n" not in line and "\r" not in line, "multi-line-message", repr(line))
        if line:
            _require(line.startswith(path), "message-without-path", repr(line))
    if summary.packets:
        _require(summary.first_ts is not None and summary.last_ts is not None
                 and summary.first_ts <= summary.last_ts, "timestamps",
                 f"first {summary.first_ts} last {summary.last_ts}")
    else:
        _require(summary.first_ts is None and summary.last_ts is None, "timestamps",
                 "timestamps without packets")
    for name, count in result.anomalies.items():
        _require(count > 0, "anomaly-count", f"{name} {count}")
    json.loads(to_json(result))
    to_csv(result)


def check_capture(path: str, rules: CompiledRules, *, compiled: bool = False) -> AnalysisResult:
    """Every oracle of a capture: the record walk, the analysis, and their agreement."""
    outcome = read_capture(path, compiled=compiled)
    result = analyze_capture(path, rules, compiled=compiled)
    check_result(result, path)
    summary = result.captures[0]
    _require((summary.packets, summary.bytes) == (outcome.packets, outcome.bytes),
             "packets-lost",
             f"the reader yielded {outcome.packets} packets ({outcome.bytes} bytes), the "
             f"result counts {summary.packets} ({summary.bytes} bytes)")
    if outcome.error is not None:
        _require(summary.error == str(outcome.error), "error-mismatch",
                 f"{summary.error!r} != {str(outcome.error)!r}")
        _require(summary.status in ("corrupt", "unreadable"), "error-status", summary.status)
    elif not outcome.complete:
        _require(summary.status == "cut", "cut-status", summary.status)
        _require(any(f"at byte {outcome.cut_at};" in w for w in summary.warnings),
                 "cut-offset", f"cut at {outcome.cut_at}, warnings {summary.warnings}")
    else:
        _require(summary.status == "ok", "ok-status", summary.status)
    return result


def check_modes_agree(path: str, rules: CompiledRules) -> None:
    """The compiled kernels and their interpreted source give the same result."""
    a = check_capture(path, rules, compiled=False).to_dict()
    b = check_capture(path, rules, compiled=True).to_dict()
    _require(a == b, "compiled-differs", f"interpreted {a} != compiled {b}")


# ---- rule files ----------------------------------------------------------------------

_PROBE_EDGES = (0, 1, 80, 443, 1023, 1024, 3478, 50000, 50019, 59999, 65534, 65535)


def probe_ports(rules: RuleSet, limit: int = 24) -> list[int]:
    """Ports at and around the edges of the rules' ranges (at most ``limit``)."""
    ports = set(_PROBE_EDGES)
    for rule in rules.rules:
        for side in (rule.client, rule.server):
            for ranges in side.values():
                for lo, hi in ranges:
                    ports.update(p for p in (lo - 1, lo, hi, hi + 1) if 0 <= p <= 65535)
                    if len(ports) >= limit:
                        return sorted(ports)
    return sorted(ports)


def probe_headers(packets: list[tuple[int | None, int, int]]) -> Headers:
    """Header columns of packets (protocol or None for no IP layer, port a, port b)."""
    n = len(packets)
    h = Headers.empty(n)
    for col in h.as_tuple():
        col[:] = 0
    for i, (proto, a, b) in enumerate(packets):
        if proto is None:
            continue
        h.ip[i] = 4
        h.proto[i] = proto
        h.sport[i] = a
        h.dport[i] = b
        h.flags[i] = FLAG_PORTS
    return h


def check_ruleset(rules: RuleSet, *, limit: int = 24) -> None:
    """The compiled lookup agrees with ``classify_one`` on ports around every edge."""
    ports = probe_ports(rules, limit)
    protos: list[int | None] = [*PROTOCOLS.values(), 1, None]
    packets = [(p, a, b) for p in protos for a in ports for b in ports]
    compiled = compile_rules(rules)
    got = compiled.classify(probe_headers(packets))
    names = compiled.categories
    for (proto, a, b), cat in zip(packets, got.tolist(), strict=True):
        want = rules.classify_one(proto, a, b)
        _require(names[cat] == want, "lookup-differs",
                 f"protocol {proto} ports {a},{b}: lookup {names[cat]!r}, reference {want!r}")


def _check_rules_error(exc: RulesError, path: str) -> None:
    text = str(exc)
    _require("\n" not in text and "\r" not in text, "multi-line-rules-error", repr(text[:200]))
    _require(text.startswith(path), "rules-error-without-path", repr(text[:200]))


def _same_rules(a: RuleSet, b: RuleSet) -> bool:
    return (a.rules, a.categories, a.description, a.source) == (
        b.rules, b.categories, b.description, b.source)


def check_rules_bytes(data: bytes, tmp: Path) -> RuleSet | None:
    """A rule file's bytes, through ``tomllib`` + ``parse_rules`` and through
    ``load_rules`` on a file: a :class:`RuleSet` that classifies like the reference,
    or one :class:`RulesError` naming the file; both routes agree."""
    parsed: RuleSet | None = None
    doc: dict[str, Any] | None = None
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        doc = None
    if doc is not None:
        try:
            parsed = parse_rules(doc, path="<fuzz>")
        except RulesError as exc:
            _check_rules_error(exc, "<fuzz>")
    path = tmp / "rules.toml"
    path.write_bytes(data)
    try:
        loaded = load_rules(path)
    except RulesError as exc:
        _check_rules_error(exc, str(path))
        _require(parsed is None, "routes-differ", f"parse_rules accepted, load_rules: {exc}")
        return None
    _require(parsed is not None and _same_rules(parsed, loaded), "routes-differ",
             "load_rules accepted what parse_rules did not, or read it differently")
    check_ruleset(loaded)
    return loaded
