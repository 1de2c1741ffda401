"""The pipeline: source -> batch -> decode -> classify -> aggregate -> result."""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .decode import (
    ANOMALY_NAMES,
    FLAG_FIRST_FRAGMENT,
    FLAG_LATER_FRAGMENT,
    KNOWN_LINKTYPES,
    Headers,
    decode_batch,
)
from .errors import CaptureError, NotACaptureError
from .lookup import CompiledRules, compile_rules
from .result import AnalysisResult, CaptureSummary
from .rules import RuleSet, load_rules
from .sources import open_capture
from .split import analyze_split, plan_ranges

__all__ = [
    "Aggregator", "FragmentTable", "Part", "analyze", "analyze_capture", "expand_paths", "finish",
    "scan",
]

Progress = Callable[[int], None]

#: Datagrams remembered for their later fragments; the oldest is forgotten first.
FRAGMENT_TABLE_SIZE = 65_536


class Counters(Protocol):
    """Anything holding packets and bytes per category."""

    packets: np.ndarray
    bytes: np.ndarray


def move(counters: Counters, src: int, dst: int, packets: int, nbytes: int) -> None:
    """Move packets and bytes from category ``src`` to ``dst``."""
    if src != dst:
        counters.packets[src] -= packets
        counters.packets[dst] += packets
        counters.bytes[src] -= nbytes
        counters.bytes[dst] += nbytes


class FragmentTable:
    """Gives later fragments the category of their datagram's first fragment.

    Keyed by (IP version, source, destination, protocol, identification); IPv6 leaves
    the protocol out (RFC 8200: source, destination and identification name a
    datagram, and the header after a fragment header differs between fragments when
    extension headers follow it). A later
    fragment seen before its first fragment is counted as ``other`` and moved to the
    datagram's category when the first fragment arrives, in this batch or a later one.
    """

    def __init__(self, other: int, size: int = FRAGMENT_TABLE_SIZE) -> None:
        self.other = other
        self.size = size
        self.first: dict[tuple[int, ...], int] = {}  # the latest first fragment per datagram
        self.earliest: dict[tuple[int, ...], int] = {}  # the earliest one (for merging)
        self.pending: dict[tuple[int, ...], list[int]] = {}
        self.orphans = 0  # later fragments whose datagram's first fragment never came

    def settle(self, h: Headers, cat: np.ndarray, wire: np.ndarray, agg: Aggregator) -> None:
        sel = np.flatnonzero(h.flags & (FLAG_FIRST_FRAGMENT | FLAG_LATER_FRAGMENT))
        if sel.size == 0:
            return
        # Python per fragment only: fragments are rare and must be taken in order.
        version = h.ip[sel]
        proto = np.where(version == 4, h.proto[sel], 0)
        keys = zip(
            version.tolist(), h.src_hi[sel].tolist(), h.src_lo[sel].tolist(),
            h.dst_hi[sel].tolist(), h.dst_lo[sel].tolist(), proto.tolist(),
            h.frag_id[sel].tolist(), strict=True,
        )
        for i, flag, key in zip(sel.tolist(), h.flags[sel].tolist(), keys, strict=True):
            if flag & FLAG_FIRST_FRAGMENT:
                c = int(cat[i])
                self._remember(key, c)
                waiting = self.pending.pop(key, None)
                if waiting is not None:
                    move(agg, self.other, c, waiting[0], waiting[1])
            else:
                known = self.first.get(key)
                if known is not None:
                    cat[i] = known
                else:
                    waiting = self.pending.setdefault(key, [0, 0])
                    waiting[0] += 1
                    waiting[1] += int(wire[i])
                    if len(self.pending) > self.size:
                        self._forget_pending()

    def _remember(self, key: tuple[int, ...], c: int) -> None:
        self.first.pop(key, None)
        self.first[key] = c
        if len(self.first) > self.size:
            del self.first[next(iter(self.first))]
        if key not in self.earliest and len(self.earliest) < self.size:
            self.earliest[key] = c

    def merge(self, later: FragmentTable, counters: Counters) -> None:
        """Take in the table of the byte range that follows this one: our waiting
        fragments find their first fragment there, and its waiting ones find theirs
        here. ``counters`` (the merged result) receives the moves."""
        for key in [k for k in self.pending if k in later.earliest]:
            packets, nbytes = self.pending.pop(key)
            move(counters, self.other, later.earliest[key], packets, nbytes)
        for key, (packets, nbytes) in later.pending.items():
            c = self.first.get(key)
            if c is not None:
                move(counters, self.other, c, packets, nbytes)
            else:
                waiting = self.pending.setdefault(key, [0, 0])
                waiting[0] += packets
                waiting[1] += nbytes
        for key, c in later.earliest.items():
            if key not in self.earliest and len(self.earliest) < self.size:
                self.earliest[key] = c
        for key, c in later.first.items():
            self._remember(key, c)
        self.orphans += later.orphans

    def _forget_pending(self) -> None:
        oldest = next(iter(self.pending))
        self.orphans += self.pending.pop(oldest)[0]

    def finish(self) -> int:
        """Later fragments never matched to a first fragment (they stay ``other``)."""
        orphans = self.orphans + sum(p[0] for p in self.pending.values())
        self.pending.clear()
        self.orphans = 0
        return orphans


class Aggregator:
    """Counters for one capture, filled batch by batch."""

    def __init__(self, compiled_rules: CompiledRules) -> None:
        self.k = len(compiled_rules.categories)
        self.packets = np.zeros(self.k, np.int64)
        self.bytes = np.zeros(self.k, np.int64)
        self.anomaly_codes = np.zeros(len(ANOMALY_NAMES) + 1, np.int64)
        self.caplen_over_wire = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    def add(self, cat: np.ndarray, wire: np.ndarray, cap: np.ndarray, ts: np.ndarray,
            h: Headers) -> None:
        self.packets += np.bincount(cat, minlength=self.k)
        # float64 weights are exact: a batch holds far less than 2**53 bytes.
        self.bytes += np.bincount(cat, weights=wire, minlength=self.k).astype(np.int64)
        self.anomaly_codes += np.bincount(h.anomaly, minlength=self.anomaly_codes.size)
        self.caplen_over_wire += int(np.count_nonzero(cap > wire))
        lo, hi = int(ts.min()), int(ts.max())
        self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
        self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)

    def anomalies(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for code, name in ANOMALY_NAMES.items():
            if self.anomaly_codes[code]:
                out[name] = int(self.anomaly_codes[code])
        if self.caplen_over_wire:
            out["captured-over-wire-length"] = self.caplen_over_wire
        return out


@dataclass
class Part:
    """A capture, or a byte range of one, analysed but not yet finished: its later
    fragments may still find their datagram in a neighbouring range."""

    result: AnalysisResult
    fragments: FragmentTable
    end: int  # the byte offset where the reading stopped


def scan(
    path: str,
    compiled_rules: CompiledRules,
    *,
    byte_range: tuple[int, int] | None = None,
    progress: Progress | None = None,
    compiled: bool | None = None,
) -> Part:
    """Analyse a capture (or the records of ``byte_range``). Never raises for a bad
    capture: the summary says what went wrong, and every packet read before the
    damage is counted."""
    result = AnalysisResult.empty(compiled_rules.rules.name, compiled_rules.categories)
    summary = CaptureSummary(path=path)
    result.captures.append(summary)
    agg = Aggregator(compiled_rules)
    fragments = FragmentTable(compiled_rules.other)
    reported = 0
    reader = None
    try:
        reader = open_capture(path, compiled=compiled, byte_range=byte_range)
        reported = reader.position
        summary.format = reader.format
        use_compiled = reader.compiled
        for batch in reader:
            h = decode_batch(batch, compiled=use_compiled)
            cat = compiled_rules.classify(h)
            fragments.settle(h, cat, batch.wirelen, agg)
            agg.add(cat, batch.wirelen, batch.caplen, batch.ts, h)
            if progress is not None:
                progress(reader.position - reported)
                reported = reader.position
        if not reader.complete:
            summary.complete = False
            summary.status = "cut"
            summary.warnings.append(
                f"{path}: capture cut off mid-record at byte {reader.cut_at}; "
                "the complete records before it are counted"
            )
    except NotACaptureError as exc:
        summary.complete = False
        summary.status = "unreadable"
        summary.error = str(exc)
    except CaptureError as exc:
        summary.complete = False
        summary.status = "corrupt"
        summary.error = str(exc)
    finally:
        if reader is not None:
            summary.link_types = sorted(reader.link_types)
            reader.source.close()
    end = reader.position if reader is not None else 0
    if progress is not None and reader is not None and end > reported:
        progress(end - reported)
    result.packets += agg.packets
    result.bytes += agg.bytes
    result.anomalies = agg.anomalies()
    summary.packets = int(agg.packets.sum())
    summary.bytes = int(agg.bytes.sum())
    if agg.first_ts is not None and agg.last_ts is not None:
        summary.first_ts = agg.first_ts / 1e9
        summary.last_ts = agg.last_ts / 1e9
    return Part(result, fragments, end)


def finish(part: Part) -> AnalysisResult:
    """The result of a whole capture: later fragments still waiting are orphans."""
    result = part.result
    orphans = part.fragments.finish()
    if orphans:
        result.anomalies["fragment-without-first"] += orphans
    for summary in result.captures:
        for lt in summary.link_types:
            if lt not in KNOWN_LINKTYPES:
                summary.warnings.append(
                    f"{summary.path}: link type {lt} is not decoded; its packets count as non-ip"
                )
    return result


def analyze_capture(
    path: str,
    compiled_rules: CompiledRules,
    *,
    progress: Progress | None = None,
    compiled: bool | None = None,
) -> AnalysisResult:
    """Analyse one capture (see :func:`scan`)."""
    return finish(scan(path, compiled_rules, progress=progress, compiled=compiled))


def expand_paths(paths: Iterable[str], *, pattern: str = "*") -> list[str]:
    """Captures named by ``paths``: files as given, ``-`` for stdin, directories searched
    recursively for files matching ``pattern``, and unexpanded globs expanded."""
    out: list[str] = []
    for p in paths:
        if p == "-" or os.path.isfile(p):
            out.append(p)
        elif os.path.isdir(p):
            found = sorted(str(f) for f in Path(p).rglob(pattern) if f.is_file())
            out.extend(found)
        elif glob.has_magic(p):
            matches = sorted(glob.glob(p, recursive=True))
            out.extend(matches if matches else [p])
        else:
            out.append(p)  # reported as unreadable by the reader
    return out


def analyze(
    paths: str | Sequence[str],
    *,
    rules: RuleSet | str | Path | None = None,
    jobs: int = 1,
    progress: Progress | None = None,
) -> AnalysisResult:
    """Analyse captures and return their merged result.

    ``paths``: capture files, directories, globs, or ``-`` for stdin. ``rules``: a
    :class:`RuleSet`, a rule file path, or None for the default Office 365 table.
    ``jobs`` > 1 spreads captures over that many processes, or a single large pcap
    capture's byte ranges. ``progress`` is called
    with the number of capture bytes just consumed.
    """
    ruleset = rules if isinstance(rules, RuleSet) else load_rules(rules)
    compiled_rules = compile_rules(ruleset)
    files = expand_paths([paths] if isinstance(paths, str) else paths)
    ranges = plan_ranges(files[0], jobs) if jobs > 1 and len(files) == 1 else None
    if ranges is not None:
        parts = [analyze_split(files[0], ruleset, compiled_rules, ranges, progress=progress)]
    elif jobs > 1 and len(files) > 1:
        from .parallel import analyze_parallel  # only for several jobs

        parts = analyze_parallel(files, ruleset, jobs=jobs, progress=progress)
    else:
        parts = [analyze_capture(f, compiled_rules, progress=progress) for f in files]
    result = AnalysisResult.empty(ruleset.name, compiled_rules.categories)
    for part in parts:
        result = result + part
    return result
