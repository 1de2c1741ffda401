"""Work handed over between the processes of one run: the last captures, or the two
halves of one, rarely take the same time, and the process that finishes first would
otherwise wait for the other.

Each process reading a plain pcap (a planned byte range, or a whole capture) claims,
before each batch, the bytes that batch may reach, and learns its range's end. Once
every planned task has started, a process with nothing left to do takes the end of
the remainder that would take its reader longest, from where both should finish
together (see :meth:`Board.take`): it finds a record boundary there as the planner
does (:func:`classifier.split.plan_ranges`), moves that range's end back to it, and
reads from it to the old end. The two parts merge like any two neighbouring
byte ranges, so results do not change; a boundary guessed wrong is caught by the
merge, which then reads the capture in one piece.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .sources.ranges import ByteRange

__all__ = ["MIN_BYTES", "MIN_SECONDS", "Board", "Claim"]

#: A remainder its reader would take less time than this to read is left to it: a
#: part more costs a merge (0.02-0.08 s with full flow tables).
MIN_SECONDS = 0.15
#: Nor is a remainder smaller than this split.
MIN_BYTES = 8 << 20
#: Ranges taken over per run at most (each needs a row of the board).
MAX_STEALS = 64
#: A reader's pace is judged after this long.
_SETTLED_NS = 20_000_000
#: How much sooner than the process that made the board (which merges the results)
#: another should end: its result then crosses over while that one still reads.
HANDOVER_SECONDS = 0.07
#: A reader's pace is judged over its last 0.1-0.2 s: it slows down as its flow table
#: fills, and a pace averaged from its start would leave it too much.
_PACE_WINDOW_NS = 100_000_000
# A row: the claim, the end, whether it is read, the file, the first byte, when it
# began, the reader's pid; two recent (claim, time) marks, the pace is measured from
# the older.
_CLAIM, _STOP, _ACTIVE, _FILE, _FIRST, _T0, _PID, _MARK, _MARK_T, _PREV, _PREV_T = range(11)
_WIDTH = 11
_NEXT, _WAITING = 0, 1  # the next free row; planned tasks not started yet


class Board:
    """The ranges being read by the processes of one run, in memory they all share.

    Row ``i < tasks`` is planned task ``i``'s; ranges taken over get the rows after.
    Made before the processes are forked (``ctx`` is their multiprocessing context).
    """

    def __init__(self, ctx: Any, files: Sequence[str], tasks: int, *,
                 movable: Sequence[bool] = (), min_seconds: float = MIN_SECONDS,
                 min_bytes: int = MIN_BYTES) -> None:
        self.files = list(files)
        #: Per file: whether its ranges' ends may move (plain pcap files only).
        self.movable = list(movable) or [False] * len(self.files)
        self.min_seconds = min_seconds
        self.min_bytes = min_bytes
        self.parent = os.getpid()
        self._rows = tasks + MAX_STEALS
        self._lock = ctx.Lock()
        self._raw = ctx.RawArray("q", 2 + _WIDTH * self._rows)
        cells = self._cells()
        cells[_NEXT], cells[_WAITING] = tasks, tasks

    def _cells(self) -> np.ndarray:
        return np.frombuffer(self._raw, np.int64)

    def _row(self, i: int) -> np.ndarray:
        return self._cells()[2 + _WIDTH * i: 2 + _WIDTH * (i + 1)]

    def started(self) -> None:
        """A planned task has started."""
        with self._lock:
            self._cells()[_WAITING] -= 1

    def begin(self, row: int, file: int, start: int, stop: int) -> Claim:
        """Open row ``row`` for the range ``start``-``stop`` of ``files[file]``."""
        with self._lock:
            self._open(row, file, start, stop)
        return Claim(self, row)

    def _open(self, row: int, file: int, start: int, stop: int) -> None:
        """Row ``row``: this process reads ``start``-``stop`` of ``files[file]`` from now
        (the lock held)."""
        now = time.monotonic_ns()
        self._row(row)[:] = (start, stop, 1, file, start, now, os.getpid(), start, now, start,
                             now)

    def take(self, pace: float = 0.0) -> tuple[int, ByteRange] | None:
        """(file, range with its claim) of the end of the remainder that would take
        its reader longest, now this process's to read; None while a planned task has
        not started, or when no remainder is worth splitting, or no record boundary is
        found in it. A reader that began less than 40 ms ago is waited for, until its
        pace can be judged. The remainder is cut where both would finish together, this
        process reading at ``pace`` bytes a second (0: as fast as the other); see
        HANDOVER_SECONDS."""
        from .split import plan_ranges  # import cycle

        while True:
            with self._lock:
                cells = self._cells()
                if cells[_WAITING] > 0 or cells[_NEXT] >= self._rows:
                    return None
                rows = cells[2: 2 + _WIDTH * int(cells[_NEXT])].reshape(-1, _WIDTH)
                now = time.monotonic_ns()
                left = rows[:, _STOP] - rows[:, _CLAIM]
                done = rows[:, _CLAIM] - rows[:, _FIRST]
                spent = now - rows[:, _T0]
                # Each reader's recent pace says how long its remainder would take it.
                recent = rows[:, _CLAIM] - rows[:, _PREV]
                lately = now - rows[:, _PREV_T]
                big = (rows[:, _ACTIVE] == 1) & (left >= self.min_bytes)
                ok = big & (done > 0) & (recent > 0) & (spent >= _SETTLED_NS)
                seconds = np.where(ok, left * (lately / 1e9) / np.maximum(recent, 1), -1.0)
                victim = int(seconds.argmax())
                if ok[victim] and seconds[victim] >= self.min_seconds:
                    claim, stop, file, pid = (int(rows[victim, c])
                                              for c in (_CLAIM, _STOP, _FILE, _PID))
                    theirs = float(recent[victim]) / max(float(lately[victim]) / 1e9, 1e-9)
                    break
                # A reader that has only just begun (the last task, started as this
                # process ended its own) is judged once its pace can be: the wait
                # is shorter than what it may leave to take.
                young = big & ~ok & (spent < 2 * _SETTLED_NS)
                if not young.any():
                    return None
                wait = float(_SETTLED_NS - spent[young].max())
            time.sleep(max(wait, 1e6) / 1e9)
        mine = pace if pace >= 1 else theirs
        # The reader keeps x bytes, this process reads the rest, and they should end
        # together. But a worker should end HANDOVER_SECONDS before the board's maker
        # (which merges), its result crossing over meanwhile: whichever of the two
        # takes from the other.
        lead = 0.0
        if pid == self.parent != os.getpid():
            lead = HANDOVER_SECONDS
        elif pid != self.parent == os.getpid():
            lead = -HANDOVER_SECONDS
        left = stop - claim
        keep = (left / mine + lead) / (1 / theirs + 1 / mine)
        path = self.files[file]
        found = plan_ranges(path, 2, min_bytes=0,
                            at=[claim + int(min(max(keep, 0.0), float(left)))])
        if found is None or len(found) < 2:
            return None
        cut = found[1].start
        with self._lock:
            cells = self._cells()
            row = self._row(victim)
            if (row[_ACTIVE] != 1 or not row[_CLAIM] <= cut < row[_STOP]
                    or cells[_NEXT] >= self._rows):
                return None  # the reader got there first, or the range ended
            end = int(row[_STOP])
            row[_STOP] = cut
            mine = int(cells[_NEXT])
            cells[_NEXT] += 1
            self._open(mine, file, cut, end)
        return file, ByteRange(cut, end, found[1].state, limit=Claim(self, mine))


class Claim:
    """A reader's row on the board (see :class:`classifier.sources.ranges.Limit`)."""

    def __init__(self, board: Board, row: int) -> None:
        self.board = board
        self.row = row

    def claim(self, upto: int) -> int:
        with self.board._lock:
            row = self.board._row(self.row)
            row[_CLAIM] = max(int(row[_CLAIM]), min(upto, int(row[_STOP])))
            now = time.monotonic_ns()
            if now - row[_MARK_T] >= _PACE_WINDOW_NS:
                row[_PREV], row[_PREV_T] = row[_MARK], row[_MARK_T]
                row[_MARK], row[_MARK_T] = row[_CLAIM], now
            return int(row[_STOP])

    def end(self) -> int:
        """Close the row: the range is read. Returns where it ended."""
        with self.board._lock:
            row = self.board._row(self.row)
            row[_ACTIVE] = 0
            return int(row[_STOP])
