"""A live capture through the one pipeline: batches from a live source are counted
exactly as a file's are (:func:`classifier.pipeline.count_batch`), and the end of the
capture is finished as a file's end (:func:`classifier.pipeline.finish`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..fragments import FRAGMENT_TABLE_SIZE, FragmentTable
from ..lookup import CompiledRules
from ..naming import Naming
from ..pipeline import Aggregator, Options, Part, count_batch, count_named, finish
from ..result import AnalysisResult, CaptureSummary
from ..sources.batch import Batch
from .base import LiveSource, LiveStats

__all__ = ["BatchSink", "LiveRun", "Snapshot"]


class BatchSink(Protocol):
    """Receives every batch counted (e.g. a capture-file writer)."""

    def write(self, batch: Batch) -> None: ...


@dataclass(frozen=True)
class Snapshot:
    """Running totals: what the live table and the metrics show."""

    categories: tuple[str, ...]
    elapsed: float  # seconds since the capture started
    packets: np.ndarray  # [category]
    bytes: np.ndarray  # [category]
    directions: np.ndarray | None  # [category, direction, packets/bytes]
    received: int
    dropped: int
    start_time: float  # seconds since the epoch


@dataclass
class LiveRun:
    """Counts the batches of a live source until told to stop."""

    source: LiveSource
    compiled_rules: CompiledRules
    options: Options = field(default_factory=Options)
    sink: BatchSink | None = None
    count: int | None = None  # stop after this many packets
    duration: float | None = None  # stop after this many seconds

    def __post_init__(self) -> None:
        self.agg = Aggregator(self.compiled_rules, self.options, compiled=True)
        self.fragments = FragmentTable(self.compiled_rules.other)
        self.naming = Naming(self.compiled_rules) if self.compiled_rules.uses_names else None
        if self.naming is not None and self.agg.flow_table is not None:
            self.agg.flow_table.names = self.naming.names
        self.seen = 0
        self.orphans = 0  # fragments without their first, counted before the end
        self.start_time = time.time()
        self._started = time.monotonic()
        self._stop = threading.Event()
        self.snapshot = self._snapshot()

    def stop(self) -> None:
        """Ask the capture to stop (safe from a signal handler or another thread)."""
        self._stop.set()

    def run(self, *, tick: float = 1.0,
            on_tick: Callable[[Snapshot], None] | None = None) -> None:
        """Capture until :meth:`stop`, ``count`` packets or ``duration`` seconds;
        every ``tick`` seconds, refresh :attr:`snapshot` and pass it to ``on_tick``."""
        self._started = time.monotonic()
        self.start_time = time.time()
        end = self._started + self.duration if self.duration is not None else None
        next_tick = self._started + tick
        counted_out = False
        while not self._stop.is_set():
            now = time.monotonic()
            if end is not None and now >= end:
                break
            wait = min(next_tick, end if end is not None else next_tick) - now
            batch = self.source.next_batch(min(max(wait, 0.0), 0.2))
            if batch is not None and self._take(batch):
                counted_out = True
                break
            if time.monotonic() >= next_tick:
                self.refresh()
                if on_tick is not None:
                    on_tick(self.snapshot)
                next_tick = max(next_tick + tick, time.monotonic())
        if not counted_out:
            self._drain()
        self.refresh()

    def _take(self, batch: Batch) -> bool:
        """Count a batch; True when ``count`` packets have been seen."""
        full = False
        if self.count is not None and self.seen + len(batch) >= self.count:
            n = self.count - self.seen
            batch = Batch(batch.buf, batch.offset[:n], batch.caplen[:n], batch.wirelen[:n],
                          batch.ts[:n], batch.linktype[:n], batch.start)
            full = True
        if len(batch):
            if self.sink is not None:
                self.sink.write(batch)
            count_batch(batch, self.compiled_rules, self.agg, self.fragments,
                        naming=self.naming)
            self.seen += len(batch)
            if len(self.fragments.dropped) >= FRAGMENT_TABLE_SIZE:
                self._count_orphans()
        return full

    def _count_orphans(self) -> None:
        """Count now the later fragments pushed out of the table without their first
        fragment, as a file's end counts them: a capture of months holds none for long."""
        spare = FragmentTable(self.compiled_rules.other)
        spare.dropped, self.fragments.dropped = self.fragments.dropped, []
        orphans = spare.finish()
        if orphans is not None:
            self.agg.add(orphans)
            self.orphans += len(orphans)

    def _drain(self, wait: float = 0.2, limit: float = 1.0) -> None:
        """Count what the kernel holds already (a ring block is handed over after a
        short timeout); on a busy link, for ``limit`` seconds at most."""
        until = time.monotonic() + limit
        batch = self.source.next_batch(wait)
        while batch is not None:
            if self._take(batch) or time.monotonic() >= until:
                return
            batch = self.source.next_batch(0)

    def refresh(self) -> Snapshot:
        """Read the kernel counters and take a new snapshot."""
        self.source.update_stats()
        self.snapshot = self._snapshot()
        return self.snapshot

    def _snapshot(self) -> Snapshot:
        r = self.agg.result
        stats = self.source.stats
        return Snapshot(
            r.category_names, time.monotonic() - self._started, r.packets.copy(),
            r.bytes.copy(), None if r.directions is None else r.directions.copy(),
            stats.received, stats.dropped, self.start_time)

    def finish(self) -> tuple[AnalysisResult, LiveStats]:
        """The result, as :func:`classifier.pipeline.analyze` gives it for a file, and
        the kernel's counters."""
        summary = CaptureSummary(path=self.source.interface, format="live",
                                 link_types=[self.source.linktype])
        if self.naming is not None:
            count_named(self.naming, self.fragments, self.agg)
            self.naming = None
        result = finish(Part(self.agg, summary, self.fragments, 0, self.options.flow_sink))
        if self.orphans:
            result.anomalies["fragment-without-first"] += self.orphans
        self.snapshot = self._snapshot()
        return result, self.source.stats
