"""Captures spread over local processes; their results merge exactly.

The work is cut into tasks of similar size: a capture is one task, or, when it is
large against the whole (one big file among small ones, or fewer files than jobs),
several byte ranges (see :mod:`classifier.split`). The largest tasks start first, so
that no big one starts last while the other processes sit idle; and once all have
started, a process left without work takes over the end of what another still has
to read (see :mod:`classifier.steal`).
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import queue
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

from .lookup import CompiledRules, compile_rules
from .result import AnalysisResult
from .rules import RuleSet
from .sources.ranges import ByteRange

if TYPE_CHECKING:
    from .outbox import Outbox
    from .pipeline import Options
    from .steal import Board

__all__ = ["analyze_parallel", "plan_tasks"]

#: Tasks per job aimed at: a little more than one evens out unequal finishing times.
TASKS_PER_JOB = 2
#: A capture split in as many ranges as jobs: the share of it that the last range (the
#: one this process reads) has beyond an even share. The others' results have to
#: cross over and be taken in (0.05-0.08 s on the 16M-packet mix, see
#: :mod:`classifier.outbox`): they had better end first, their results taken in
#: while this process still reads.
HANDOVER_SHARE = 0.015


def plan_tasks(files: Sequence[str], jobs: int, *, split: bool = True,
               ) -> list[tuple[int, ByteRange | None]]:
    """(file index, byte range or None for the whole file) of each task, largest
    first. A capture larger than an even share of the work is split into ranges
    (with ``split``)."""
    from .split import SPLIT_MIN_BYTES, plan_ranges

    sizes = [_size(f) if f != "-" else 0 for f in files]
    share = sum(sizes) / max(1, jobs * TASKS_PER_JOB)
    tasks: list[tuple[int, int, ByteRange | None]] = []  # (size, index, range)
    for index, (path, size) in enumerate(zip(files, sizes, strict=True)):
        big = split and share and size >= SPLIT_MIN_BYTES
        parts = min(jobs, math.ceil(size / share)) if big else 1
        at = None
        if parts > 1 and len(files) == 1:  # this process takes the last range
            other = (1 - 1 / parts - HANDOVER_SHARE) / (parts - 1)
            at = [int(size * other * k) for k in range(1, parts)]
        ranges = plan_ranges(path, parts, at=at) if parts > 1 else None
        if ranges is None:
            tasks.append((size, index, None))
        else:
            tasks += [(r.stop - r.start, index, r) for r in ranges]
    tasks.sort(key=lambda t: -t[0])
    return [(index, r) for _, index, r in tasks]


def analyze_parallel(
    files: Sequence[str],
    rules: RuleSet,
    *,
    jobs: int,
    progress: Callable[[int], None] | None = None,
    options: Options | None = None,
    tasks: Sequence[tuple[int, ByteRange | None]] | None = None,
    steal_above: tuple[float, int] | None = None,
) -> list[AnalysisResult]:
    """Analyse ``files`` in up to ``jobs`` processes; results in the order of ``files``.
    ``tasks``: as :func:`plan_tasks` gives them (planned here by default). A process
    left without work takes over the end of what another has left to read of a plain
    pcap (see :mod:`classifier.steal`; ``steal_above``: the seconds and bytes a
    remainder must exceed to be split, by default its ``MIN_SECONDS`` and ``MIN_BYTES``)."""
    from .outbox import Outbox
    from .pipeline import Options  # the pipeline imports this module lazily
    from .split import merge_parts, warm_up
    from .steal import MIN_BYTES, MIN_SECONDS, Board

    opts = options or Options()
    if tasks is None:
        tasks = plan_tasks(files, jobs)
    compiled_rules = compile_rules(rules)
    # fork: workers inherit the imported modules and the kernels loaded here instead
    # of importing and loading them again.
    warm_up()
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    # A capture whose rules name flows is never cut (see plan_tasks' ``split``), nor
    # one read with resynchronisation (its end may be met while skipping damage).
    steal = not compiled_rules.uses_names and not opts.skip_damaged
    seconds, size = steal_above or (MIN_SECONDS, MIN_BYTES)
    board = Board(ctx, files, len(tasks), movable=[steal and _plain_pcap(f) for f in files],
                  min_seconds=seconds, min_bytes=size)
    pieces: dict[int, list[Piece]] = {}  # file -> its pieces
    # No more tasks than jobs (a capture split in as many ranges): this process takes
    # one itself, so that one result less crosses between processes: the last byte
    # range when there is one (a first range holds no flow records back for the
    # merge, so its result is the smaller to send: half, on the 8M-packet mix), else
    # the largest task.
    own: int | None = None
    if 1 < len(tasks) <= jobs:
        own = 0
        ranged = [i for i, t in enumerate(tasks) if t[1] is not None]
        if ranged:
            own = max(ranged, key=lambda i: _start(tasks[i][1]))
    pooled = [i for i in range(len(tasks)) if i != own]

    workers = min(jobs, len(pooled))
    outbox = Outbox(ctx, workers)
    arrived = _Arrivals(outbox)

    def done(value: list[Piece]) -> None:
        for piece in value:
            pieces.setdefault(piece[0], []).append(piece)
            if progress is not None:
                progress(piece[2] - piece[1])

    with tempfile.TemporaryDirectory(prefix="o365-traffic-") as spill, \
            ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                initializer=_join_pool, initargs=(board, outbox)) as pool:
        # Byte ranges' held flow records beyond a bound wait for the merge on disk.
        opts = dataclasses.replace(opts, spill_dir=opts.spill_dir or spill)
        futures = [pool.submit(_pooled, i, *tasks[i], rules, opts) for i in pooled]
        for fut in futures:
            # Taken in by the pool's thread as each arrives, while this one still reads.
            fut.add_done_callback(arrived.put)
        if own is not None:
            done(_task(board, own, *tasks[own], rules, opts))
        for _ in futures:
            value = arrived.get()
            if isinstance(value, BaseException):
                raise value
            done(value)
        # Merged while the workers exit (leaving the pool waits for them).
        results: list[AnalysisResult | None] = [None] * len(files)
        for index, found in pieces.items():
            found.sort(key=lambda p: p[1])
            value = found[0][3]
            if len(found) == 1 and isinstance(value, AnalysisResult):
                results[index] = value
            else:
                results[index] = merge_parts(files[index], [(a, b) for _, a, b, _ in found],
                                             [p[3] for p in found], compiled_rules, opts)
    return [r for r in results if r is not None]


class _Arrivals:
    """The pool's results in the order they arrive, each taken out of the outbox by
    the thread that sets it (or the exception it raised)."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, fut: Future[Any]) -> None:
        try:
            self._queue.put(self._outbox.receive(fut.result()))
        except BaseException as exc:  # raised again in the merging thread
            self._queue.put(exc)

    def get(self) -> Any:
        return self._queue.get()


#: (file index, first byte, end, value): ``value`` is a whole capture's result, or the
#: part and report of a byte range (the end is where the range ended up).
Piece = tuple[int, int, int, Any]

_board: Board | None = None  # a pool process's: the run's
_outbox: Outbox | None = None


def _join_pool(board: Board, outbox: Outbox) -> None:
    global _board, _outbox
    _board, _outbox = board, outbox
    outbox.join()


def _pooled(row: int, index: int, r: ByteRange | None, rules: RuleSet, options: Options,
            ) -> Any:
    """A pool process's task: its pieces, their arrays shipped through the outbox."""
    assert _board is not None and _outbox is not None
    return _outbox.ship(_task(_board, row, index, r, rules, options))


def _task(board: Board, row: int, index: int, r: ByteRange | None, rules: RuleSet,
          options: Options) -> list[Piece]:
    """Planned task ``row`` (a capture, or a range of one), then whatever this process
    can take over from the others; a worker joins neighbouring pieces before sending
    them."""
    compiled_rules = compile_rules(rules)
    board.started()
    began = time.perf_counter()
    pieces = [_read(board, row, index, r, compiled_rules, options)]
    while True:
        # This process's pace so far sets how much it takes over.
        pace = sum(b - a for _, a, b, _ in pieces) / max(1e-6, time.perf_counter() - began)
        taken = board.take(pace)
        if taken is None:
            return pieces
        file, br = taken
        pieces.append(_read(board, None, file, br, compiled_rules, options))
        if os.getpid() != board.parent:
            # Fewer pieces to send. (The board's maker merges all pieces in file
            # order right after: joining them first would merge its own range twice.)
            pieces = _join_neighbours(board.files, pieces, compiled_rules, options)


def _read(board: Board, row: int | None, index: int, r: ByteRange | None,
          compiled_rules: CompiledRules, options: Options) -> Piece:
    """One capture (``r`` None) or byte range, on the board when its end may move."""
    from .pipeline import analyze_capture, finish, scan
    from .sources.pcap import PcapReader
    from .split import _as_range, _scan_piece, trim_for_merge
    from .steal import Claim

    path = board.files[index]
    size = _size(path)
    if r is not None and isinstance(r.limit, Claim):  # taken over: already on the board
        part = scan(path, compiled_rules, byte_range=r, compiled=True, options=options)
        trim_for_merge(part)
        return index, r.start, r.limit.end(), (part, r.report)
    if not board.movable[index]:
        if r is None:
            return index, 0, size, analyze_capture(path, compiled_rules, options=options)
        part, report = _scan_piece(path, compiled_rules, _as_range(path, r), options)
        trim_for_merge(part)
        return index, r.start, r.stop, (part, report)
    assert row is not None
    start, stop = (PcapReader.first_record, size) if r is None else (r.start, r.stop)
    claim = board.begin(row, index, start, stop)
    moving = ByteRange(start, stop, limit=claim)
    part = scan(path, compiled_rules, byte_range=moving, compiled=None if r is None else True,
                options=options)
    end = claim.end()
    if r is None and end == stop:
        return index, 0, size, finish(part)
    trim_for_merge(part)
    return index, 0 if r is None else start, end, (part, moving.report)


def _join_neighbours(files: Sequence[str], pieces: list[Piece],
                     compiled_rules: CompiledRules, options: Options) -> list[Piece]:
    """The last piece joined to a piece of the same capture that starts where it ends
    (it was taken from the end of the range before that one)."""
    from .split import join_parts, trim_for_merge

    index, start, end, value = pieces[-1]
    for k, (i, a, b, later) in enumerate(pieces[:-1]):
        if i == index and a == end and not isinstance(later, AnalysisResult):
            joined = join_parts(files[index], [(start, end), (a, b)], [value, later],
                                compiled_rules, options)
            if joined is None:
                return pieces  # the parent's merge finds the same, and reads it whole
            trim_for_merge(joined[0])
            return [*pieces[:k], *pieces[k + 1:-1], (index, start, b, joined)]
    return pieces


def _start(r: ByteRange | None) -> int:
    return -1 if r is None else r.start


def _plain_pcap(path: str) -> bool:
    """An uncompressed pcap file (its ranges can be cut anywhere at a record)."""
    from .sources.pcap import MAGICS

    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return len(head) == 4 and int.from_bytes(head, "little") in MAGICS and os.path.isfile(path)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path) if os.path.isfile(path) else 0
    except OSError:
        return 0
