"""The pipeline: source -> batch -> decode -> classify -> aggregate -> result."""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .decode import (
    ANOMALY_NAMES,
    KNOWN_LINKTYPES,
    decode_batch,
)
from .errors import CaptureError, NotACaptureError
from .flows import S_LAST_BIN, Flows, FlowTable, absorb_table
from .fragments import FragmentTable, Packets
from .lookup import CompiledRules, compile_rules
from .measures import (
    DEFAULT_INSIDE,
    DIRECTIONS,
    EXPECTED_DSCP,
    Inside,
    Series,
    count_details,
    directions_of,
    tally,
)
from .naming import Naming
from .result import AnalysisResult, CaptureSummary, add_optional
from .rules import RuleSet, load_rules
from .sources import open_capture
from .sources.batch import Batch

__all__ = [
    "Aggregator",
    "FragmentTable",
    "Options",
    "Part",
    "analyze",
    "analyze_capture",
    "count_batch",
    "expand_paths",
    "finish",
    "scan",
]

Progress = Callable[[int], None]



@dataclass(frozen=True)
class Options:
    """What to measure beyond categories (see :mod:`classifier.measures`)."""

    inside: tuple[str, ...] = DEFAULT_INSIDE
    #: False: category totals only (schema 1's sections; no directions, flows, rates,
    #: QoS or series), the fastest run.
    details: bool = True
    #: Interval of the time series; None: no series in the output (rates still use
    #: one of 1 s).
    interval_ns: int | None = None
    flows: bool = True
    max_flows: int = 100_000
    idle_timeout_ns: int = 300 * 1_000_000_000
    #: Receives flow records (evicted ones as they go, the rest at the end).
    flow_sink: Callable[[Flows], None] | None = None
    #: pcap: after a corrupt record header, resynchronise on the next plausible
    #: records and go on (the skipped bytes are counted) instead of stopping.
    skip_damaged: bool = False
    #: Makes (from the category names) a mergeable summary of flow records, e.g. the
    #: top flows: one per capture or byte range, fed every flow record, carried in
    #: ``AnalysisResult.digest`` and merged with ``+``; unlike ``flow_sink`` it works
    #: with any number of jobs. Must be picklable (e.g. a class or ``functools.partial``).
    flow_digest: Callable[[tuple[str, ...]], Any] | None = None
    #: A directory for a byte range's flow records held for the merge beyond
    #: ``flows.HELD_ROWS`` (None: kept in memory). The process pool sets a temporary
    #: one for its run.
    spill_dir: str | None = None

    @property
    def series_interval_ns(self) -> int:
        return self.interval_ns or 1_000_000_000


_NO_SKIP = np.zeros(0, np.bool_)


class Aggregator:
    """Counters for one capture (or byte range), filled batch by batch."""

    def __init__(self, compiled_rules: CompiledRules, options: Options,
                 compiled: bool = True) -> None:
        self.k = len(compiled_rules.categories)
        self.options = options
        self.compiled = compiled
        self.inside = Inside(options.inside)
        self.result = AnalysisResult.empty(
            compiled_rules.rules.name, compiled_rules.categories,
            interval_ns=options.series_interval_ns,
            show_series=options.interval_ns is not None,
            inside=self.inside.cidrs, details=options.details,
        )
        self.packets = self.result.packets
        self.bytes = self.result.bytes
        self.anomaly_codes = np.zeros(len(ANOMALY_NAMES) + 1, np.int64)
        self.caplen_over_wire = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.expected = np.full(self.k, -1, np.int64)
        for name, dscp in EXPECTED_DSCP.items():
            if name in compiled_rules.categories:
                self.expected[compiled_rules.categories.index(name)] = dscp
        self.flow_table: FlowTable | None = None
        if options.flows and options.details:
            self.flow_table = FlowTable(
                other=compiled_rules.other, n_categories=self.k,
                max_flows=options.max_flows, idle_timeout_ns=options.idle_timeout_ns,
                sink=self._evicted, compiled=compiled, spill_dir=options.spill_dir,
                # A digest or a sink must see each record: held ones go to them when
                # the merge ends them.
                account=(self.result.flows.like() if self.result.flows is not None
                         and options.flow_digest is None and options.flow_sink is None
                         else None),
            )
        if options.flow_digest is not None and self.flow_table is not None:
            self.result.digest = options.flow_digest(compiled_rules.categories)
        self._next_expiry: int | None = None
        self.warnings: list[str] = []
        self.extra: Counter[str] = Counter()  # anomalies found by the reader

    def _evicted(self, flows: Flows) -> None:
        assert self.result.flows is not None
        self.result.flows.add(flows, evicted=True)
        if self.result.digest is not None:
            self.result.digest(flows)
        if self.options.flow_sink is not None:
            self.options.flow_sink(flows)

    def add(self, p: Packets) -> None:
        """Count a batch of classified packets (but those it holds back)."""
        if p.held is not None and self.options.details and not self.compiled:
            p = p.counted()
        if not len(p):
            return
        cat, side, wire, cap, ts, h = p.cat, p.side, p.wire, p.cap, p.ts, p.h
        k, nd = self.k, len(DIRECTIONS)
        held = p.held
        if held is not None and held.size >= len(p):
            return  # all held back: counted when released
        if self.compiled:
            # One pass for the counters and the time span (it starts inverted).
            first = self.first_ts if self.first_ts is not None else np.iinfo(np.int64).max
            last = self.last_ts if self.last_ts is not None else np.iinfo(np.int64).min
            span = np.array([first, last], np.int64)
            self.caplen_over_wire += int(tally.compiled(
                cat, wire, cap, h.anomaly, ts, self.packets, self.bytes, self.anomaly_codes,
                span))
        else:
            self.packets += np.bincount(cat, minlength=k)
            # float64 weights are exact: a batch holds far less than 2**53 bytes.
            self.bytes += np.bincount(cat, weights=wire, minlength=k).astype(np.int64)
            self.anomaly_codes += np.bincount(h.anomaly, minlength=self.anomaly_codes.size)
            self.caplen_over_wire += int(np.count_nonzero(cap > wire))
            lo, hi = int(ts.min()), int(ts.max())
            span = np.array([lo if self.first_ts is None else min(self.first_ts, lo),
                             hi if self.last_ts is None else max(self.last_ts, hi)])
        # The held-back packets' times count now or later alike: they are all counted
        # in the end, and first and last times are a minimum and a maximum.
        self.first_ts, self.last_ts = int(span[0]), int(span[1])
        skip = _NO_SKIP
        if held is not None:
            # Counters only: take the few held-back packets out again rather than
            # copying the batch without them.
            self.packets -= np.bincount(cat[held], minlength=k)
            self.bytes -= np.bincount(cat[held], weights=wire[held], minlength=k).astype(
                np.int64)
            self.anomaly_codes -= np.bincount(h.anomaly[held],
                                              minlength=self.anomaly_codes.size)
            self.caplen_over_wire -= int(np.count_nonzero(cap[held] > wire[held]))
            skip = np.zeros(len(p), np.bool_)
            skip[held] = True
        if not self.options.details:
            return
        r = self.result
        assert r.directions is not None and r.qos is not None and r.series is not None
        series = r.series
        if held is None:
            hi = int(ts.max())
            bins = ts // series.interval_ns
        else:
            # The held-back packets make no series row: they take a counted packet's.
            hi = int(ts[~skip].max())
            bins = ts // series.interval_ns
            bins[held] = bins[int(np.argmin(skip))]
        rows = series.rows(bins)
        if series.n_rows > series.MAX_ROWS:
            series = self._coarsen()
            bins = ts // series.interval_ns
            if held is not None:
                bins[held] = bins[int(np.argmin(skip))]
            rows = series.rows(bins)
        if self.compiled:
            direction = np.empty(len(p), np.int64)
            inside = self.inside
            count_details.compiled(
                cat, wire, h.src_hi, h.src_lo, h.dst_hi, h.dst_lo, h.ip, h.dscp, skip,
                inside.starts_hi, inside.starts_lo, inside.flags, inside.v4_blocks,
                self.expected, rows,
                r.directions, r.qos, series.packets, series.bytes, direction)
        else:
            direction = directions_of(h, self.inside)
            cd = cat * nd + direction
            r.directions[:, :, 0] += np.bincount(cd, minlength=k * nd).reshape(k, nd)
            r.directions[:, :, 1] += np.bincount(cd, weights=wire, minlength=k * nd).astype(
                np.int64).reshape(k, nd)
            expected = self.expected[cat]
            media = expected >= 0
            if media.any():
                marked = media & (h.dscp == expected)
                r.qos[:, :, 0] += np.bincount(cd[media], minlength=k * nd).reshape(k, nd)
                r.qos[:, :, 1] += np.bincount(cd[marked], minlength=k * nd).reshape(k, nd)
            series.add(rows, cat, direction, wire)
        if self.flow_table is not None:
            ip = h.ip
            if held is not None:  # the flow table passes over packets without IP
                ip = ip.copy()
                ip[held] = 0
            self.flow_table.add(h, cat, side, wire, ts, bins, rows, series.active, ip=ip)
            # Expire idle flows now and then, not on every batch.
            if self._next_expiry is None:
                self._next_expiry = hi + self.options.idle_timeout_ns
            elif hi >= self._next_expiry:
                self.flow_table.expire(hi)
                self._next_expiry = hi + self.options.idle_timeout_ns // 4

    def _coarsen(self) -> Series:
        """Too many intervals: make them longer until they fit (memory stays bounded)."""
        series = self.result.series
        assert series is not None
        factor = 1
        while True:
            factor *= 2
            wider = series.coarsened(factor)
            if wider.n_rows <= series.MAX_ROWS // 2:
                break
        self.result.series = wider
        if self.flow_table is not None:
            n = self.flow_table.count
            self.flow_table.stats[:n, S_LAST_BIN] //= factor
        self.warnings.append(
            f"time series interval widened to {wider.interval_ns / 1e9:g} s to bound memory")
        return wider

    def absorb(self, later: Aggregator) -> None:
        """Take in the aggregator of the byte range that follows this one's."""

        self.result.packets += later.result.packets
        self.result.bytes += later.result.bytes
        r, o = self.result, later.result
        r.directions = add_optional(r.directions, o.directions)
        r.qos = add_optional(r.qos, o.qos)
        r.series = add_optional(r.series, o.series)
        r.flows = add_optional(r.flows, o.flows)
        r.digest = add_optional(r.digest, o.digest)
        self.packets, self.bytes = r.packets, r.bytes
        self.anomaly_codes += later.anomaly_codes
        self.caplen_over_wire += later.caplen_over_wire
        self.extra += later.extra
        for ts in (later.first_ts, later.last_ts):
            if ts is not None:
                self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
                self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        if self.flow_table is not None and later.flow_table is not None:
            assert r.series is not None
            r.flows = add_optional(r.flows, absorb_table(self.flow_table, later.flow_table,
                                                         r.series))
            if self.flow_table.count > self.flow_table.max_flows and self.last_ts is not None:
                self.flow_table.make_room(self.last_ts)

    def anomalies(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for code, name in ANOMALY_NAMES.items():
            if self.anomaly_codes[code]:
                out[name] = int(self.anomaly_codes[code])
        if self.caplen_over_wire:
            out["captured-over-wire-length"] = self.caplen_over_wire
        out.update(self.extra)
        return out


@dataclass
class Part:
    """A capture, or a byte range of one, analysed but not yet finished: its held-back
    fragments may still find their datagram in a neighbouring range."""

    agg: Aggregator
    summary: CaptureSummary
    fragments: FragmentTable
    end: int  # the byte offset where the reading stopped
    flow_sink: Callable[[Flows], None] | None = None

    def absorb(self, later: Part) -> None:
        """Take in the part for the byte range that follows this one."""
        self.agg.absorb(later.agg)
        released = self.fragments.merge(later.fragments)
        if released is not None:
            self.agg.add(released)
        s, n = self.summary, later.summary
        s.packets += n.packets
        s.bytes += n.bytes
        s.complete, s.status, s.error = n.complete, n.status, n.error
        s.warnings += n.warnings
        self.end = later.end


def count_batch(batch: Batch, compiled_rules: CompiledRules, agg: Aggregator,
                fragments: FragmentTable, *, compiled: bool = True,
                naming: Naming | None = None) -> None:
    """Decode, classify and count one batch (later fragments wait in ``fragments``
    for their datagram's first one; with ``naming``, a flow's first packets wait for
    its server name)."""
    h = decode_batch(batch, compiled=compiled)
    if naming is not None:  # classifies too, by name where names matter
        parts = naming.process(batch, h, compiled=compiled)
    else:
        cat, side = compiled_rules.classify_with_sides(h, sides=True, compiled=compiled)
        assert side is not None
        parts = [Packets(h, cat, side, batch.wirelen, batch.caplen, batch.ts)]
    for packets in parts:
        now, released = fragments.settle(packets, compiled=compiled)
        agg.add(now)
        if released is not None:
            agg.add(released)


def scan(
    path: str,
    compiled_rules: CompiledRules,
    *,
    byte_range: tuple[int, int] | None = None,
    progress: Progress | None = None,
    compiled: bool | None = None,
    options: Options | None = None,
) -> Part:
    """Analyse a capture (or the records of ``byte_range``). Never raises for a bad
    capture: the summary says what went wrong, and every packet read before the
    damage is counted."""
    options = options or Options()
    summary = CaptureSummary(path=path)
    agg: Aggregator | None = None
    fragments = FragmentTable(compiled_rules.other)
    naming = Naming(compiled_rules) if compiled_rules.uses_names else None
    reported = 0
    reader = None
    try:
        reader = open_capture(path, compiled=compiled, byte_range=byte_range,
                              skip_damaged=options.skip_damaged)
        reported = reader.position
        summary.format = reader.format
        use_compiled = reader.compiled
        agg = Aggregator(compiled_rules, options, compiled=use_compiled)
        if naming is not None and agg.flow_table is not None:
            agg.flow_table.names = naming.names
        later = byte_range is not None and byte_range[0] > reader.first_record
        # A range after the first is taken in by the one before: its first fragments
        # may complete that one's held fragments, its flows continue that one's.
        # (The first range has none before it: keeping either would only send it
        # across for nothing.)
        fragments.keep_earliest = later
        if later and agg.flow_table is not None:
            agg.flow_table.hold_first = True
        for batch in reader:
            count_batch(batch, compiled_rules, agg, fragments, compiled=use_compiled,
                        naming=naming)
            if progress is not None:
                progress(reader.position - reported)
                reported = reader.position
        if naming is not None:
            count_named(naming, fragments, agg)
        skipped: list[tuple[int, int]] = getattr(reader, "skipped", [])
        for at, length in skipped[:10]:
            summary.warnings.append(f"{path}: skipped {length} damaged bytes at byte {at}")
        if len(skipped) > 10:
            summary.warnings.append(f"{path}: and {len(skipped) - 10} more damaged stretches")
        if skipped:
            summary.complete = False
            agg.extra["damaged-bytes-skipped"] += sum(n for _, n in skipped)
        if not reader.complete and reader.cut_at is not None:
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
            summary.warnings += [f"{path}: {w}" for w in reader.source.warnings]
            reader.source.close()
    end = reader.position if reader is not None else 0
    if progress is not None and reader is not None and end > reported:
        progress(end - reported)
    if agg is None:
        agg = Aggregator(compiled_rules, replace(options, flows=False), compiled=False)
    summary.packets = int(agg.packets.sum())
    summary.bytes = int(agg.bytes.sum())
    summary.warnings += [f"{path}: {w}" for w in dict.fromkeys(agg.warnings)]
    return Part(agg, summary, fragments, end, options.flow_sink)


def count_named(naming: Naming, fragments: FragmentTable, agg: Aggregator) -> None:
    """Count the packets still held for their flows' names, now decided."""
    rest = naming.finish()
    if rest is not None:
        now, released = fragments.settle(rest)
        agg.add(now)
        if released is not None:
            agg.add(released)


def finish(part: Part) -> AnalysisResult:
    """The result of a whole capture: held-back fragments whose first fragment never
    came are counted as ``other``; the flows still in the table are summed up."""
    agg = part.agg
    orphans = part.fragments.finish()
    if orphans is not None:
        agg.add(orphans)
    result = agg.result
    summary = part.summary
    summary.packets = int(agg.packets.sum())
    summary.bytes = int(agg.bytes.sum())
    if agg.first_ts is not None and agg.last_ts is not None:
        summary.first_ts = agg.first_ts / 1e9
        summary.last_ts = agg.last_ts / 1e9
    result.captures = [summary]
    result.anomalies = agg.anomalies()
    if orphans is not None:
        result.anomalies["fragment-without-first"] += len(orphans)
    if agg.flow_table is not None and result.flows is not None:
        result.flows = add_optional(result.flows, agg.flow_table.release_held())
        if agg.last_ts is not None:
            # Flows idle at the end are ended ones, however the capture was read (in
            # one piece the table is swept now and then, a byte range's not at all).
            agg.flow_table.expire(agg.last_ts)
            result.flows = add_optional(result.flows, agg.flow_table.release_held())
        rows = agg.flow_table.rows()
        result.flows.add(rows)
        if result.digest is not None and len(rows):
            result.digest(rows)
        if part.flow_sink is not None and len(rows):
            part.flow_sink(rows)  # evicted flows went there as they were evicted
        agg.flow_table = None
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
    options: Options | None = None,
) -> AnalysisResult:
    """Analyse one capture (see :func:`scan`)."""
    return finish(scan(path, compiled_rules, progress=progress, compiled=compiled,
                       options=options))


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
    options: Options | None = None,
    scheduler: str | None = None,
) -> AnalysisResult:
    """Analyse captures and return their merged result.

    ``paths``: capture files, directories, globs, or ``-`` for stdin. ``rules``: a
    :class:`RuleSet`, a rule file path, or None for the default Office 365 table.
    ``jobs`` > 1 spreads captures over that many processes, or a single large pcap
    capture's byte ranges. ``scheduler`` (``tcp://host:port``) runs the same tasks on
    a Dask distributed cluster instead. ``progress`` is called
    with the number of capture bytes just consumed.
    """
    ruleset = rules if isinstance(rules, RuleSet) else load_rules(rules)
    compiled_rules = compile_rules(ruleset)
    files = expand_paths([paths] if isinstance(paths, str) else paths)
    opts = options or Options()
    if opts.flow_sink is not None:
        jobs = 1  # flow records go to one sink, in this process
    tasks = None
    if jobs > 1 and scheduler is None:
        from .parallel import plan_tasks  # only for several jobs

        # Whole captures and byte ranges of large ones; but a flow's name is decided at
        # its start, and a byte range cannot name the flows that began before it, so
        # captures are not split for rule sets that use names.
        tasks = plan_tasks(files, jobs, split=not compiled_rules.uses_names)
    if scheduler is not None:
        from .cluster import analyze_cluster  # only with a cluster

        parts = analyze_cluster(files, ruleset, scheduler, options=opts, parts=max(jobs, 2),
                                progress=progress)
    elif tasks is not None and len(tasks) > 1:
        from .parallel import analyze_parallel

        parts = analyze_parallel(files, ruleset, jobs=jobs, progress=progress, options=opts,
                                 tasks=tasks)
    else:
        parts = [analyze_capture(f, compiled_rules, progress=progress, options=opts)
                 for f in files]
    result = AnalysisResult.empty(
        ruleset.name, compiled_rules.categories, interval_ns=opts.series_interval_ns,
        show_series=opts.interval_ns is not None, inside=Inside(opts.inside).cidrs,
        details=opts.details,
    )
    for part in parts:
        result = result + part
    return result

