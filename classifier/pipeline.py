"""The pipeline: source -> batch -> decode -> classify -> aggregate -> result."""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

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

__all__ = ["Aggregator", "FragmentTable", "analyze", "analyze_capture", "expand_paths"]

Progress = Callable[[int], None]

#: Datagrams remembered for their later fragments; the oldest is forgotten first.
FRAGMENT_TABLE_SIZE = 65_536


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
        self.first: dict[tuple[int, ...], int] = {}
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
                if waiting is not None and c != self.other:
                    agg.move(self.other, c, waiting[0], waiting[1])
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

    def move(self, src: int, dst: int, packets: int, nbytes: int) -> None:
        self.packets[src] -= packets
        self.packets[dst] += packets
        self.bytes[src] -= nbytes
        self.bytes[dst] += nbytes

    def anomalies(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for code, name in ANOMALY_NAMES.items():
            if self.anomaly_codes[code]:
                out[name] = int(self.anomaly_codes[code])
        if self.caplen_over_wire:
            out["captured-over-wire-length"] = self.caplen_over_wire
        return out


def analyze_capture(
    path: str,
    compiled_rules: CompiledRules,
    *,
    progress: Progress | None = None,
    compiled: bool | None = None,
) -> AnalysisResult:
    """Analyse one capture. Never raises for a bad capture: the summary says what
    went wrong, and every packet read before the damage is counted."""
    rules = compiled_rules.rules
    result = AnalysisResult.empty(rules.name, compiled_rules.categories)
    summary = CaptureSummary(path=path)
    result.captures.append(summary)
    agg = Aggregator(compiled_rules)
    fragments = FragmentTable(compiled_rules.other)
    reported = 0
    reader = None
    try:
        reader = open_capture(path, compiled=compiled)
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
    if progress is not None and reader is not None and reader.position > reported:
        progress(reader.position - reported)
    for lt in summary.link_types:
        if lt not in KNOWN_LINKTYPES:
            summary.warnings.append(
                f"{path}: link type {lt} is not decoded; its packets count as non-ip"
            )
    result.packets += agg.packets
    result.bytes += agg.bytes
    result.anomalies = agg.anomalies()
    orphans = fragments.finish()
    if orphans:
        result.anomalies["fragment-without-first"] = orphans
    summary.packets = int(agg.packets.sum())
    summary.bytes = int(agg.bytes.sum())
    if agg.first_ts is not None and agg.last_ts is not None:
        summary.first_ts = agg.first_ts / 1e9
        summary.last_ts = agg.last_ts / 1e9
    return result


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
    ``jobs`` > 1 spreads captures over that many processes. ``progress`` is called
    with the number of capture bytes just consumed.
    """
    ruleset = rules if isinstance(rules, RuleSet) else load_rules(rules)
    compiled_rules = compile_rules(ruleset)
    files = expand_paths([paths] if isinstance(paths, str) else paths)
    if jobs > 1 and len(files) > 1:
        from .parallel import analyze_parallel

        parts = analyze_parallel(files, ruleset, jobs=jobs, progress=progress)
    else:
        parts = [analyze_capture(f, compiled_rules, progress=progress) for f in files]
    result = AnalysisResult.empty(ruleset.name, compiled_rules.categories)
    for part in parts:
        result = result + part
    return result
