"""Bidirectional flows: who sent what, when, with which DSCP marking.

A flow is (protocol, the two address/port ends). Packets update a hash table held in
numpy arrays; the update is one kernel loop, since each packet may create the flow
the next one finds. Each flow knows its client end: the end that matched the client
side of its rule; else the sender of a TCP SYN; else the end with the higher port.

The table is bounded: flows idle longer than the idle timeout, and when it is full
the least recently seen ones, are *evicted*: handed to a sink (written out, or just
counted) and forgotten. Their packets and bytes stay in every total.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ._jit import kernel
from .decode import Headers

if TYPE_CHECKING:
    from .measures import Series

__all__ = ["FLOW_COLUMNS", "HELD_ROWS", "FlowTable", "Flows", "HeldRecords", "update_flows"]

# Columns of the ``keys`` table (int64): the two ends in canonical order (end 1 is the
# lower (address, port)), then the protocol.
K_A_HI, K_A_LO, K_B_HI, K_B_LO, K_PORTS, K_PROTO = range(6)
# Columns of the ``stats`` table (int64).
(S_FIRST, S_LAST, S_PK_UP, S_BY_UP, S_PK_DN, S_BY_DN, S_CAT, S_CLIENT_A, S_LAST_BIN,
 S_DSCP_OTHER, S_NAME, S_HOLD) = range(12)
N_STATS = 12
DSCP_SLOTS = 4  # distinct DSCP values counted per flow; the rest add to S_DSCP_OTHER

#: Held first records (see FlowTable.hold_first) kept in memory at most (about 20 MB,
#: as a full table of the default size); the older ones go to a file when the table
#: has a directory for it.
HELD_ROWS = 100_000

EMPTY = 0  # slots hold row + 1; zeros cost no memory until written (calloc)
_SIGN = -(1 << 63)  # flipping the sign bit makes signed order unsigned order
_M64 = (1 << 64) - 1


def _flow_hash_py(a_hi, a_lo, b_hi, b_lo, ports, pr):  # type: ignore[no-untyped-def]
    h = 0x9E3779B97F4A7C15
    for v in (a_hi, a_lo, b_hi, b_lo, ports, pr):
        h = ((h ^ (int(v) & _M64)) * 0xFF51AFD7ED558CCD) & _M64
        h ^= h >> 33
    return h & 0x7FFFFFFFFFFFFFFF


@kernel(inline=True, interpreted=_flow_hash_py)
def flow_hash(a_hi, a_lo, b_hi, b_lo, ports, pr):  # type: ignore[no-untyped-def]
    """A 63-bit hash of a flow key (the same compiled and interpreted)."""
    h = np.uint64(0x9E3779B97F4A7C15)
    for v in (a_hi, a_lo, b_hi, b_lo, ports, pr):
        h = (h ^ np.uint64(v)) * np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    return np.int64(h & np.uint64(0x7FFFFFFFFFFFFFFF))


@kernel(inline=True)
def find_flow(slots, keys, s_hi, s_lo, d_hi, d_lo, sp, dp, pr):  # type: ignore[no-untyped-def]
    """Look a packet's flow up: ``(row or -1, the slot the probe stopped at, whether
    the source is the key's second end, the key's five other fields)``. The key puts
    the lower (address, port) end first, as unsigned numbers."""
    if s_hi != d_hi:
        swap = (s_hi ^ _SIGN) > (d_hi ^ _SIGN)
    elif s_lo != d_lo:
        swap = (s_lo ^ _SIGN) > (d_lo ^ _SIGN)
    else:
        swap = sp > dp
    if swap:
        a_hi, a_lo, b_hi, b_lo, ports = d_hi, d_lo, s_hi, s_lo, (dp << 16) | sp
    else:
        a_hi, a_lo, b_hi, b_lo, ports = s_hi, s_lo, d_hi, d_lo, (sp << 16) | dp
    mask = slots.shape[0] - 1
    j = flow_hash(a_hi, a_lo, b_hi, b_lo, ports, pr) & mask
    row = -1
    while True:
        r = slots[j] - 1
        if r < 0:
            break
        if keys[r, 0] == a_hi and keys[r, 1] == a_lo and keys[r, 2] == b_hi \
                and keys[r, 3] == b_lo and keys[r, 4] == ports and keys[r, 5] == pr:
            row = r
            break
        j = (j + 1) & mask
    return row, j, swap, a_hi, a_lo, b_hi, b_lo, ports


@kernel(inline=True)
def add_flow(slots, keys, j, row, a_hi, a_lo, b_hi, b_lo, ports, pr):  # type: ignore[no-untyped-def]
    """Put a new flow's key in ``row`` and index it at slot ``j`` (where the probe
    that did not find it stopped)."""
    slots[j] = row + 1
    keys[row, 0] = a_hi
    keys[row, 1] = a_lo
    keys[row, 2] = b_hi
    keys[row, 3] = b_lo
    keys[row, 4] = ports
    keys[row, 5] = pr


@kernel
def place_flows(keys, count, slots):  # type: ignore[no-untyped-def]
    """Index rows 0..count-1 of ``keys`` into the empty open-addressing ``slots``."""
    mask = slots.shape[0] - 1
    for row in range(count):
        j = flow_hash(keys[row, 0], keys[row, 1], keys[row, 2], keys[row, 3], keys[row, 4],
                      keys[row, 5]) & mask
        while slots[j] != EMPTY:
            j = (j + 1) & mask
        slots[j] = row + 1


@kernel
def update_flows(proto, src_hi, src_lo, dst_hi, dst_lo, sport, dport, side, tcp_flags,  # type: ignore[no-untyped-def]
                 cat, other, wire, ts, dscp, ip, name, bins, rows, active, slots, keys,
                 stats, dscp_val, dscp_cnt, count, idle_ns, hold_until, ev_keys, ev_stats,
                 ev_val, ev_cnt):
    """Add a batch of packets to the flow table; returns ``(flows, evicted, stop)``:
    the new number of flows, the records written to the ``ev_*`` arrays, and -1, or
    the packet at which the table or the eviction arrays filled up (the caller makes
    room and resumes there).

    A packet of a flow idle for more than ``idle_ns`` ends that flow (its record goes
    to the ``ev_*`` arrays) and starts a new one under the same key. ``slots`` is the
    open-addressing index (a power of two long, EMPTY or a flow row + 1);
    ``active[rows[i], cat]`` counts each flow once per interval (``bins[i]``) it is
    seen in (``bins`` empty: no series).
    """
    ev_n = 0
    capacity = keys.shape[0]
    use_bins = bins.shape[0] > 0
    for i in range(proto.shape[0]):
        if ip[i] == 0:
            continue
        sp = np.int64(sport[i])
        dp = np.int64(dport[i])
        pr = np.int64(proto[i])
        row, j, swap, a_hi, a_lo, b_hi, b_lo, ports = find_flow(
            slots, keys, src_hi[i], src_lo[i], dst_hi[i], dst_lo[i], sp, dp, pr)
        t = ts[i]
        c = cat[i]
        fresh = False
        # A byte range's flow may continue one of the range before (held: see
        # FlowTable.hold_first); a record begun after an idle gap here may not.
        hold = 1 if row < 0 and t <= hold_until else 0
        if row >= 0 and t - stats[row, S_LAST] > idle_ns:
            if ev_n >= ev_keys.shape[0]:
                return count, ev_n, i
            ev_keys[ev_n] = keys[row]
            ev_stats[ev_n] = stats[row]
            ev_val[ev_n] = dscp_val[row]
            ev_cnt[ev_n] = dscp_cnt[row]
            ev_n += 1
            fresh = True
        elif row < 0:
            if count >= capacity:
                return count, ev_n, i
            row = count
            count += 1
            add_flow(slots, keys, j, row, a_hi, a_lo, b_hi, b_lo, ports, pr)
            fresh = True
        if fresh:
            # Which end is the client: the rule's, else a SYN's sender, else the
            # higher port.
            sd = side[i]
            if sd < 0 and pr == 6 and (tcp_flags[i] & 0x12) == 0x02:
                sd = 1
            elif sd < 0 and pr == 6 and (tcp_flags[i] & 0x12) == 0x12:
                sd = 0
            elif sd < 0:
                sd = 1 if sp >= dp else 0
            src_is_a = not swap
            stats[row, S_CLIENT_A] = 1 if (sd == 1) == src_is_a else 0
            stats[row, S_FIRST] = t
            stats[row, S_LAST] = t
            stats[row, S_PK_UP] = 0
            stats[row, S_BY_UP] = 0
            stats[row, S_PK_DN] = 0
            stats[row, S_BY_DN] = 0
            stats[row, S_CAT] = c
            stats[row, S_LAST_BIN] = -(1 << 62)
            stats[row, S_DSCP_OTHER] = 0
            stats[row, S_NAME] = name[i]
            stats[row, S_HOLD] = hold
            for k in range(dscp_val.shape[1]):
                dscp_val[row, k] = 0
                dscp_cnt[row, k] = 0
        else:
            if t < stats[row, S_FIRST]:
                stats[row, S_FIRST] = t
            if t > stats[row, S_LAST]:
                stats[row, S_LAST] = t
            if stats[row, S_CAT] == other and c != other:
                stats[row, S_CAT] = c
            if stats[row, S_NAME] == 0:
                stats[row, S_NAME] = name[i]
        up = (stats[row, S_CLIENT_A] == 1) == (not swap)
        if up:
            stats[row, S_PK_UP] += 1
            stats[row, S_BY_UP] += wire[i]
        else:
            stats[row, S_PK_DN] += 1
            stats[row, S_BY_DN] += wire[i]
        d = np.int64(dscp[i]) + 1  # stored plus one: 0 is an empty slot
        placed = False
        for k in range(dscp_val.shape[1]):
            if dscp_val[row, k] == d:
                dscp_cnt[row, k] += 1
                placed = True
                break
            if dscp_val[row, k] == 0:
                dscp_val[row, k] = d
                dscp_cnt[row, k] = 1
                placed = True
                break
        if not placed:
            stats[row, S_DSCP_OTHER] += 1
        if use_bins:
            b = bins[i]
            if b > stats[row, S_LAST_BIN]:
                stats[row, S_LAST_BIN] = b
                active[rows[i], stats[row, S_CAT]] += 1
    return count, ev_n, -1


#: The columns of a flow record, as written to Parquet or CSV.
FLOW_COLUMNS = (
    "protocol", "client_addr", "client_port", "server_addr", "server_port", "category",
    "first_ts", "last_ts", "packets_up", "bytes_up", "packets_down", "bytes_down", "dscp",
    "server_name",
)


@dataclass
class Flows:
    """Flow records as columns (rows of the table, or an evicted chunk)."""

    keys: np.ndarray
    stats: np.ndarray
    dscp_val: np.ndarray
    dscp_cnt: np.ndarray
    #: The capture's server names: ``stats[:, S_NAME]`` indexes it (0: no name).
    names: list[str] = field(default_factory=lambda: [""])

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def take(self, index: np.ndarray) -> Flows:
        """The rows ``index`` (positions, or a mask), copied."""
        return _rows_of((self.keys, self.stats, self.dscp_val, self.dscp_cnt), index,
                        self.names)

    @staticmethod
    def concat(parts: Sequence[Flows], names: list[str]) -> Flows:
        """``parts``' records, one after the other."""
        keys, stats, dscp_val, dscp_cnt = (
            np.concatenate([getattr(p, col) for p in parts])
            for col in ("keys", "stats", "dscp_val", "dscp_cnt"))
        return Flows(keys, stats, dscp_val, dscp_cnt, names)

    def name(self, i: int) -> str:
        """Flow ``i``'s server name ("" when none was learned)."""
        n = int(self.stats[i, S_NAME])
        return self.names[n] if 0 < n < len(self.names) else ""


class HeldRecords:
    """A byte range's held first records, in the order they ended: the newest up to
    :data:`HELD_ROWS` in memory, the older ones appended to files in ``directory``
    (none: all in memory), one per column, so that a batch of them reads back in one
    piece. On a busy link a range can end hundreds of thousands of flows that began
    within the idle timeout of its start; only the merge reads them, a batch at a
    time. Pickled, the files go by name: the merging process reads them, and deletes
    them once read.

    With a ``summary``, the records are counted in it as they come, as records of
    their own: few continue a flow of the range before, and the merge then takes back
    only those (:func:`join_held`), instead of counting every record then."""

    def __init__(self, directory: str | None = None,
                 summary: FlowSummary | None = None) -> None:
        self.directory = directory
        self.summary = summary
        self.chunks: list[Flows] = []  # in memory, after those in the files
        self.in_memory = 0
        self.paths: list[str] = []  # a file per column (see _COLUMNS), once spilled
        self.spilled: list[int] = []  # rows of each chunk in the files, in order

    def __len__(self) -> int:
        return self.in_memory + sum(self.spilled)

    def append(self, rows: Flows) -> None:
        if self.summary is not None:
            self.summary.add(rows, evicted=True)
        self.chunks.append(rows)
        self.in_memory += len(rows)
        if self.directory is not None and self.in_memory > HELD_ROWS:
            self._spill()

    def _spill(self) -> None:
        if not self.paths:
            for name, _, _ in _COLUMNS:
                fd, path = tempfile.mkstemp(prefix=f"held-{name}-", dir=self.directory)
                os.close(fd)
                self.paths.append(path)
        for (name, _, _), path in zip(_COLUMNS, self.paths, strict=True):
            with open(path, "ab") as fh:
                for chunk in self.chunks:
                    fh.write(np.ascontiguousarray(getattr(chunk, name)).data)
        self.spilled += [len(chunk) for chunk in self.chunks]
        self.chunks, self.in_memory = [], 0

    def batches(self, names: list[str], *, again: bool = False) -> Iterator[Flows]:
        """All the records in order, about HELD_ROWS at a time (the caller's to
        change); the files are then deleted, unless they are to be read ``again``."""
        if self.paths:
            sizes = [0]
            for n in self.spilled:
                if sizes[-1] >= HELD_ROWS:
                    sizes.append(0)
                sizes[-1] += n
            with contextlib.ExitStack() as stack:
                files = [stack.enter_context(open(p, "rb")) for p in self.paths]
                for n in sizes:
                    k, st, dv, dc = (np.fromfile(fh, dtype, n * w).reshape(n, w)
                                     for fh, (_, w, dtype) in zip(files, _COLUMNS, strict=True))
                    yield Flows(k, st, dv, dc, names)
            if not again:
                self.discard()
        if self.chunks:
            chunks = self.chunks
            if len(chunks) > 1:
                self.chunks = chunks = [Flows.concat(chunks, names)]
            yield chunks[0]
        if not again:
            self.chunks, self.in_memory = [], 0

    def discard(self) -> None:
        """Forget the records in the files (and delete them)."""
        for path in self.paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.paths, self.spilled = [], []


#: The columns of a Flows: name, width, type.
_COLUMNS = (("keys", 6, np.int64), ("stats", N_STATS, np.int64),
            ("dscp_val", DSCP_SLOTS, np.int8), ("dscp_cnt", DSCP_SLOTS, np.int64))


@dataclass
class FlowTable:
    """The bounded flow table of one capture (see the module docstring)."""

    other: int
    n_categories: int
    max_flows: int = 100_000
    idle_timeout_ns: int = 300 * 1_000_000_000
    sink: Callable[[Flows], None] | None = None
    compiled: bool = True
    #: The server names flow records refer to (shared with the naming stage).
    names: list[str] = field(default_factory=lambda: [""])
    #: A byte range of a capture: a flow first seen within the idle timeout of the
    #: range's first packet may continue a flow of the range before. Its first record
    #: here is not handed to the sink when it ends (idle, or evicted) but kept in
    #: ``held_first``, for the merge to join it to that flow (:func:`join_held`).
    hold_first: bool = False
    #: Where held first records beyond HELD_ROWS go (None: they stay in memory).
    spill_dir: str | None = None
    #: An empty summary: held first records are counted in one like it as they are
    #: held (see :class:`HeldRecords`); None: they are counted when the merge ends
    #: them, as when the sink must see every record.
    account: FlowSummary | None = None
    held_first: HeldRecords = field(init=False)
    start_ts: int | None = None
    count: int = 0
    evicted: int = 0
    keys: np.ndarray = field(init=False)
    stats: np.ndarray = field(init=False)
    dscp_val: np.ndarray = field(init=False)
    dscp_cnt: np.ndarray = field(init=False)
    slots: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        # The whole bound at once: zeroed arrays take memory only as rows are used.
        self._allocate(self.max_flows)
        self.held_first = self.new_held()

    def new_held(self) -> HeldRecords:
        """An empty store of held first records."""
        summary = None if self.account is None else self.account.like(
            keep=QOS_REPORTED + HELD_REPORTED)
        return HeldRecords(self.spill_dir, summary)

    def __getstate__(self) -> dict[str, object]:
        # Only the rows in use travel between processes (a view of them pickles as
        # just its own bytes).
        state = dict(self.__dict__)
        for name in ("keys", "stats", "dscp_val", "dscp_cnt"):
            state[name] = state[name][: self.count]
        state["capacity"] = self.keys.shape[0]
        del state["slots"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        capacity = int(state.pop("capacity"))  # type: ignore[call-overload]
        used = {name: state.pop(name) for name in ("keys", "stats", "dscp_val", "dscp_cnt")}
        self.__dict__.update(state)
        self._allocate(capacity)
        for name, rows in used.items():
            getattr(self, name)[: self.count] = rows
        self._reindex()

    def _allocate(self, capacity: int) -> None:
        self.keys = np.zeros((capacity, 6), np.int64)
        self.stats = np.zeros((capacity, N_STATS), np.int64)
        self.dscp_val = np.zeros((capacity, DSCP_SLOTS), np.int8)  # DSCP + 1; 0: empty
        self.dscp_cnt = np.zeros((capacity, DSCP_SLOTS), np.int64)
        self.slots = np.zeros(_pow2(capacity * 2), np.int64)

    def add(self, h: Headers, cat: np.ndarray, side: np.ndarray, wire: np.ndarray,
            ts: np.ndarray, bins: np.ndarray, rows: np.ndarray, active: np.ndarray,
            ip: np.ndarray | None = None) -> None:
        """Add a batch (``bins``/``active``: the series, see :func:`update_flows`;
        ``ip``: the IP version column to use instead of the headers', 0 where a packet
        is to be passed over)."""
        if ip is None:
            ip = h.ip
        kern = update_flows.select(self.compiled)
        start = 0
        n = len(h)
        if self.start_ts is None and n:
            self.start_ts = int(ts.min())
        hold_until = -(1 << 62)
        if self.hold_first and self.start_ts is not None:
            hold_until = self.start_ts + self.idle_timeout_ns
        ev = (np.zeros((256, 6), np.int64), np.zeros((256, N_STATS), np.int64),
              np.zeros((256, DSCP_SLOTS), np.int8), np.zeros((256, DSCP_SLOTS), np.int64))
        while start < n:
            sl = slice(start, n)
            count, ev_n, stop = kern(
                h.proto[sl], h.src_hi[sl].view(np.int64), h.src_lo[sl].view(np.int64),
                h.dst_hi[sl].view(np.int64), h.dst_lo[sl].view(np.int64),
                h.sport[sl], h.dport[sl], side[sl], h.tcp_flags[sl], cat[sl], self.other,
                wire[sl], ts[sl], h.dscp[sl], ip[sl], h.name[sl], bins[sl] if bins.size else bins,
                rows[sl] if rows.size else rows, active, self.slots, self.keys, self.stats,
                self.dscp_val, self.dscp_cnt, self.count, self.idle_timeout_ns, hold_until,
                *ev,
            )
            count, ev_n, stop = int(count), int(ev_n), int(stop)
            self.count = count
            if ev_n:
                self._emit(Flows(ev[0][:ev_n].copy(), ev[1][:ev_n].copy(),
                                 ev[2][:ev_n].copy(), ev[3][:ev_n].copy(), self.names))
            if stop < 0:
                break
            start += stop
            if self.count >= self.keys.shape[0]:
                self.make_room(int(ts[start]))

    def _emit(self, out: Flows) -> None:
        if self.hold_first and len(out):
            held = out.stats[:, S_HOLD] == 1
            if held.any():
                self.held_first.append(out.take(held))
                out = out.take(~held)
        self.evicted += len(out)
        if self.sink is not None and len(out):
            self.sink(out)

    def release_held(self) -> FlowSummary | None:
        """End the held first records: no range before is left to join. They go to the
        sink; or, counted as they were held, their summary is returned instead."""
        held, self.held_first = self.held_first, self.new_held()
        if held.summary is not None:
            held.discard()
            return held.summary
        for out in held.batches(self.names):
            out.stats[:, S_HOLD] = 0
            self._emit(out)
        return None

    def make_room(self, now: int, *, keep: int | None = None) -> None:
        """Full: evict idle flows, then the least recently seen, down to ``keep``
        flows (half the bound by default)."""
        target = self.max_flows // 2 if keep is None else keep
        last = self.stats[: self.count, S_LAST]
        kept = last >= now - self.idle_timeout_ns
        if kept.sum() > target:
            order = np.argsort(last, kind="stable")
            kept = np.zeros(self.count, bool)
            kept[order[self.count - target :]] = True
        self._evict(~kept)

    def expire(self, now: int) -> None:
        """Evict the flows idle since before ``now`` minus the idle timeout."""
        if self.count:
            idle = self.stats[: self.count, S_LAST] < now - self.idle_timeout_ns
            if idle.any():
                self._evict(idle)

    def _evict(self, gone: np.ndarray) -> None:
        self._emit(self.rows(gone))
        self._drop(gone)

    def _drop(self, gone: np.ndarray) -> None:
        """Remove the rows ``gone`` (a mask over the rows in use), keeping the order."""
        n = self.count
        keep = np.flatnonzero(~gone)
        m = keep.size
        for table in (self.keys, self.stats, self.dscp_val, self.dscp_cnt):
            table[:m] = np.take(table[:n], keep, axis=0)
        self.count = m
        self.slots[:] = EMPTY
        self._reindex()

    def _reindex(self) -> None:
        """Rebuild the slot index after rows moved."""
        place_flows.select(self.compiled)(self.keys, self.count, self.slots)

    def rows(self, select: np.ndarray | None = None) -> Flows:
        n = self.count
        tables = (self.keys[:n], self.stats[:n], self.dscp_val[:n], self.dscp_cnt[:n])
        if select is None:
            keys, stats, dscp_val, dscp_cnt = (t.copy() for t in tables)
            return Flows(keys, stats, dscp_val, dscp_cnt, self.names)
        return _rows_of(tables, select, self.names)


def _rows_of(tables: Sequence[np.ndarray], index: np.ndarray,
             names: list[str]) -> Flows:
    """The rows ``index`` (positions, or a mask) of the four columns ``tables``, copied
    (``np.take`` by positions: twice as fast as a mask on rows of several columns)."""
    if index.dtype == np.bool_:
        index = np.flatnonzero(index)
    keys, stats, dscp_val, dscp_cnt = (np.take(t, index, axis=0) for t in tables)
    return Flows(keys, stats, dscp_val, dscp_cnt, names)


def _pow2(n: int) -> int:
    return 1 << max(4, (n - 1).bit_length())


def address(hi: int, lo: int) -> str:
    """A 128-bit address as text: IPv4-mapped ones as dotted quads."""
    hi &= (1 << 64) - 1
    lo &= (1 << 64) - 1
    if hi == 0 and lo >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def flow_columns(flows: Flows, categories: tuple[str, ...]) -> dict[str, list[object]]:
    """Flow records as named columns (client and server ends resolved)."""
    k, st = flows.keys, flows.stats
    client_a = st[:, S_CLIENT_A] == 1
    ports = k[:, K_PORTS]
    pa, pb = (ports >> 16) & 0xFFFF, ports & 0xFFFF
    a = [address(h, lo) for h, lo in zip(k[:, K_A_HI].tolist(), k[:, K_A_LO].tolist(),
                                         strict=True)]
    b = [address(h, lo) for h, lo in zip(k[:, K_B_HI].tolist(), k[:, K_B_LO].tolist(),
                                         strict=True)]
    cols: dict[str, list[object]] = {
        "protocol": k[:, K_PROTO].tolist(),
        "client_addr": [x if c else y for x, y, c in zip(a, b, client_a.tolist(), strict=True)],
        "client_port": np.where(client_a, pa, pb).tolist(),
        "server_addr": [y if c else x for x, y, c in zip(a, b, client_a.tolist(), strict=True)],
        "server_port": np.where(client_a, pb, pa).tolist(),
        "category": [categories[c] for c in st[:, S_CAT].tolist()],
        "first_ts": (st[:, S_FIRST] / 1e9).tolist(),
        "last_ts": (st[:, S_LAST] / 1e9).tolist(),
        "packets_up": st[:, S_PK_UP].tolist(),
        "bytes_up": st[:, S_BY_UP].tolist(),
        "packets_down": st[:, S_PK_DN].tolist(),
        "bytes_down": st[:, S_BY_DN].tolist(),
        "dscp": [dscp_counts(flows, i) for i in range(len(flows))],
        "server_name": [flows.name(i) for i in range(len(flows))],
    }
    return cols


def dscp_counts(flows: Flows, i: int) -> str:
    """The DSCP values a flow's packets carried, with counts: ``46:120 0:3``."""
    parts = [f"{v - 1}:{c}" for v, c in zip(flows.dscp_val[i].tolist(),
                                            flows.dscp_cnt[i].tolist(), strict=True) if v > 0]
    other = int(flows.stats[i, S_DSCP_OTHER])
    if other:
        parts.append(f"more:{other}")
    return " ".join(parts)


#: Flows listed by name in the QoS audit at most (the worst, by packets).
QOS_REPORTED = 100
#: Entries a summary of held records lists beyond QOS_REPORTED: taking back the
#: records that continue a flow after all leaves the list exact while at most this
#: many of its entries were theirs (see :meth:`FlowSummary.take_back`).
HELD_REPORTED = 400
VERDICTS = ("ok", "missing", "wrong")


def _entry_key(entry: dict[str, object]) -> tuple[object, ...]:
    # The list's order: most packets first, then the client end, the server end (as
    # numbers, as _row_order has them), the protocol, then the text of the rest: a
    # total order, which does not depend on the order records came in.
    return (-int(str(entry["packets"])), *_end(str(entry["client"])),
            *_end(str(entry["server"])), int(str(entry["protocol"])),
            *(str(entry[k]) for k in ("category", "dscp", "verdict", "server_name")))


@functools.lru_cache(maxsize=8192)
def _end(text: str) -> tuple[int, int]:
    """``address:port`` as (the address as 128 bits, IPv4 mapped; the port)."""
    addr, port = text.rsplit(":", 1)
    ip = ipaddress.ip_address(addr)
    value = int(ip) | (0xFFFF << 32) if ip.version == 4 else int(ip)
    return value, int(port)


def _row_order(flows: Flows, rows: np.ndarray, packets: np.ndarray) -> np.ndarray:
    """Columns of ``rows`` whose lexicographic order is _entry_key's up to the
    protocol: packets (negated), client and server ends, protocol."""
    k, st = flows.keys[rows], flows.stats[rows]
    a = st[:, S_CLIENT_A] == 1
    hi_a, lo_a, hi_b, lo_b = (k[:, c] ^ _SIGN for c in (K_A_HI, K_A_LO, K_B_HI, K_B_LO))
    pa, pb = (k[:, K_PORTS] >> 16) & 0xFFFF, k[:, K_PORTS] & 0xFFFF
    return np.stack([-packets, np.where(a, hi_a, hi_b), np.where(a, lo_a, lo_b),
                     np.where(a, pa, pb), np.where(a, hi_b, hi_a), np.where(a, lo_b, lo_a),
                     np.where(a, pb, pa), k[:, K_PROTO]], axis=1)


@dataclass
class FlowSummary:
    """What the flows of one or more captures add up to (mergeable with ``+``)."""

    categories: tuple[str, ...]
    expected_dscp: dict[str, int]
    flows: np.ndarray = field(init=False)  # per category
    verdicts: np.ndarray = field(init=False)  # [category, ok/missing/wrong]
    evicted: int = 0
    reported: list[dict[str, object]] = field(default_factory=list)
    #: Entries ``reported`` keeps (the worst first).
    keep: int = QOS_REPORTED
    #: Whether entries were ever cut from ``reported`` (it then holds only the worst).
    cut: bool = False

    def __post_init__(self) -> None:
        self.flows = np.zeros(len(self.categories), np.int64)
        self.verdicts = np.zeros((len(self.categories), 3), np.int64)

    def like(self, *, keep: int = QOS_REPORTED) -> FlowSummary:
        """An empty summary of the same categories."""
        return FlowSummary(self.categories, self.expected_dscp, keep=keep)

    def add(self, flows: Flows, *, evicted: bool = False) -> None:
        if not len(flows):
            return
        cats = flows.stats[:, S_CAT]
        self.flows += np.bincount(cats, minlength=len(self.categories))
        if evicted:
            self.evicted += len(flows)
        for name, dscp in self.expected_dscp.items():
            if name not in self.categories:
                continue
            c = self.categories.index(name)
            rows = np.flatnonzero(cats == c)
            if rows.size == 0:
                continue
            vals = flows.dscp_val[rows].astype(np.int64) - 1  # -1: empty slot
            cnts = flows.dscp_cnt[rows]
            other = flows.stats[rows, S_DSCP_OTHER]
            right = np.where(vals == dscp, cnts, 0).sum(axis=1)
            zero = np.where(vals == 0, cnts, 0).sum(axis=1)
            total = cnts.sum(axis=1) + other
            verdict = np.where(right == total, 0, np.where(right + zero == total, 1, 2))
            self.verdicts[c] += np.bincount(verdict, minlength=3)
            bad = rows[verdict > 0]
            if bad.size:
                self._report(flows, bad, verdict[verdict > 0], name, dscp)

    def _report(self, flows: Flows, rows: np.ndarray, verdict: np.ndarray, name: str,
                dscp: int) -> None:
        packets = flows.stats[rows, S_PK_UP] + flows.stats[rows, S_PK_DN]
        if len(self.reported) >= self.keep:
            # A full list: only flows with as many packets as its last can enter it.
            least = int(str(self.reported[-1]["packets"]))
            worth = np.flatnonzero(packets >= least)
            if worth.size < rows.size:
                self.cut = True
            rows, verdict, packets = rows[worth], verdict[worth], packets[worth]
            if not rows.size:
                return
        key = _row_order(flows, rows, packets)
        order = np.lexsort(key.T[::-1])
        if order.size > self.keep:
            # The first ``keep`` and any that tie with the last of them in these
            # columns: the rest of the order is told by the list's sort.
            self.cut = True
            tie = (key[order[self.keep:]] == key[order[self.keep - 1]]).all(axis=1)
            order = np.concatenate([order[: self.keep], order[self.keep:][tie]])
        sub = flows.take(rows[order])
        cols = flow_columns(sub, self.categories)
        for i in range(len(sub)):
            self.reported.append({
                "protocol": cols["protocol"][i],
                "client": f"{cols['client_addr'][i]}:{cols['client_port'][i]}",
                "server": f"{cols['server_addr'][i]}:{cols['server_port'][i]}",
                "server_name": cols["server_name"][i],
                "category": name, "expected_dscp": dscp, "dscp": cols["dscp"][i],
                "packets": int(packets[order[i]]),
                "verdict": VERDICTS[int(verdict[order[i]])],
            })
        self._trim()

    def _trim(self) -> None:
        self.reported.sort(key=_entry_key)
        if len(self.reported) > self.keep:
            self.cut = True
            del self.reported[self.keep:]

    def take_back(self, flows: Flows) -> bool:
        """Take back ``flows``, records added before (as evicted ones): their counts
        and their entries in ``reported``. False when the list cannot be told exactly
        any more: it was cut, and fewer than QOS_REPORTED entries remain (the entries
        that would replace theirs are not known); the summary is then spoilt."""
        if not len(flows):
            return True
        theirs = self.like(keep=len(flows))  # a record lists one entry at most
        theirs.add(flows, evicted=True)
        self.flows -= theirs.flows
        self.verdicts -= theirs.verdicts
        self.evicted -= theirs.evicted
        gone = Counter(_entry_key(e) for e in theirs.reported)
        kept = []
        for entry in self.reported:
            key = _entry_key(entry)
            if gone[key] > 0:
                gone[key] -= 1
            else:
                kept.append(entry)
        self.reported = kept
        return not self.cut or len(kept) >= QOS_REPORTED

    def __add__(self, other: FlowSummary) -> FlowSummary:
        out = FlowSummary(self.categories, self.expected_dscp,
                          keep=min(self.keep, other.keep))
        out.flows = self.flows + other.flows
        out.verdicts = self.verdicts + other.verdicts
        out.evicted = self.evicted + other.evicted
        out.reported = self.reported + other.reported
        out.cut = self.cut or other.cut
        out._trim()
        return out


@kernel
def find_flows(keys, slots, wanted, count):  # type: ignore[no-untyped-def]
    """Row of each of the first ``count`` keys of ``wanted`` in a table (-1 if absent)."""
    mask = slots.shape[0] - 1
    out = np.full(count, -1, np.int64)
    for i in range(count):
        j = flow_hash(wanted[i, 0], wanted[i, 1], wanted[i, 2], wanted[i, 3], wanted[i, 4],
                      wanted[i, 5]) & mask
        while slots[j] != EMPTY:
            r = slots[j] - 1
            if keys[r, 0] == wanted[i, 0] and keys[r, 1] == wanted[i, 1] \
                    and keys[r, 2] == wanted[i, 2] and keys[r, 3] == wanted[i, 3] \
                    and keys[r, 4] == wanted[i, 4] and keys[r, 5] == wanted[i, 5]:
                out[i] = r
                break
            j = (j + 1) & mask
    return out


def _fold(first: FlowTable, a: np.ndarray, stats: np.ndarray, dscp_val: np.ndarray,
          dscp_cnt: np.ndarray, b: np.ndarray, series: Series) -> None:
    """Add the later range's flow rows ``b`` (of ``stats``, ``dscp_val``,
    ``dscp_cnt``) to ``first``'s rows ``a``, the same flows."""
    s, t = first.stats, stats
    flip = s[a, S_CLIENT_A] != t[b, S_CLIENT_A]
    s[a, S_PK_UP] += np.where(flip, t[b, S_PK_DN], t[b, S_PK_UP])
    s[a, S_BY_UP] += np.where(flip, t[b, S_BY_DN], t[b, S_BY_UP])
    s[a, S_PK_DN] += np.where(flip, t[b, S_PK_UP], t[b, S_PK_DN])
    s[a, S_BY_DN] += np.where(flip, t[b, S_BY_UP], t[b, S_BY_DN])
    s[a, S_FIRST] = np.minimum(s[a, S_FIRST], t[b, S_FIRST])
    s[a, S_LAST] = np.maximum(s[a, S_LAST], t[b, S_LAST])
    shared = s[a, S_LAST_BIN] == t[b, S_FIRST] // series.interval_ns
    if shared.any():
        rows = series.rows(s[a, S_LAST_BIN][shared])
        np.subtract.at(series.active, (rows, t[b, S_CAT][shared]), 1)
    s[a, S_LAST_BIN] = np.maximum(s[a, S_LAST_BIN], t[b, S_LAST_BIN])
    upgrade = (s[a, S_CAT] == first.other) & (t[b, S_CAT] != first.other)
    s[a[upgrade], S_CAT] = t[b[upgrade], S_CAT]
    s[a, S_DSCP_OTHER] += t[b, S_DSCP_OTHER]
    # later's DSCP values, slot by slot (in order within each flow): into the slot
    # holding the same value or the first free one, else counted as other. Rows of
    # ``a`` are distinct, so each assignment touches a flow once.
    for k in range(dscp_val.shape[1]):
        v = dscp_val[b, k]
        on = np.flatnonzero(v != 0)
        if not on.size:
            continue
        rows, v, c = a[on], v[on], dscp_cnt[b[on], k]
        vals = first.dscp_val[rows]
        fits = (vals == v[:, None]) | (vals == 0)
        has = fits.any(axis=1)
        spot = fits.argmax(axis=1)
        first.dscp_val[rows[has], spot[has]] = v[has]
        first.dscp_cnt[rows[has], spot[has]] += c[has]
        first.stats[rows[~has], S_DSCP_OTHER] += c[~has]


def absorb_table(first: FlowTable, later: FlowTable, series: Series) -> FlowSummary | None:
    """Fold ``later`` (the flow table of the byte range after ``first``'s) into
    ``first``: its held first records join the flows they continue
    (:func:`join_held`, whose summary this returns), then its flows still in the table
    join ``first``'s (:func:`merge_tables`). The rows of ``first`` that end meanwhile
    leave its table in one move, with the new ones."""
    gone = np.zeros(first.count, bool)
    counted = join_held(first, later, series, gone)
    merge_tables(first, later, series, gone)
    return counted


def merge_tables(first: FlowTable, later: FlowTable, series: Series,
                 gone: np.ndarray) -> None:
    """Fold ``later``'s flows (those of the byte range after ``first``'s) into
    ``first``: a flow seen on both sides of the split is one flow, its client end the
    one ``first`` chose; an interval both counted it active in is counted once. A flow
    ``later`` continues only after more than the idle timeout ends in ``first``, as it
    would read in one piece, and ``later``'s is a new one; so is one continuing a row
    of ``first`` in ``gone`` (a mask of rows that have ended, removed here)."""
    n = later.count
    new = np.zeros(0, np.int64)
    if n:
        idx = find_flows.select(first.compiled)(first.keys, first.slots, later.keys, n)
        hit = np.flatnonzero(idx >= 0)
        off = gone[idx[hit]]
        idx[hit[off]] = -1
        hit = hit[~off]
        gap = later.stats[hit, S_FIRST] - first.stats[idx[hit], S_LAST] > first.idle_timeout_ns
        if gap.any():
            ended = np.zeros(first.count, bool)
            ended[idx[hit[gap]]] = True
            first._emit(first.rows(ended))
            gone |= ended
            idx[hit[gap]] = -1
            hit = hit[~gap]
        _fold(first, idx[hit], later.stats, later.dscp_val, later.dscp_cnt, hit, series)
        new = np.flatnonzero(idx < 0)
    if gone.any() or new.size:
        # The rows still on, then the new ones, in one move and one new index.
        on = np.flatnonzero(~gone)
        m = on.size + new.size
        tables = (first.keys, first.stats, first.dscp_val, first.dscp_cnt)
        rows = [np.concatenate([np.take(t[: first.count], on, axis=0),
                                np.take(u[:n], new, axis=0)])
                for t, u in zip(tables, (later.keys, later.stats, later.dscp_val,
                                         later.dscp_cnt), strict=True)]
        if m > first.keys.shape[0]:
            first._allocate(m)
        else:
            first.slots[:] = EMPTY
        first.keys[:m], first.stats[:m], first.dscp_val[:m], first.dscp_cnt[:m] = rows
        first.count = m
        first._reindex()
    first.evicted += later.evicted


def join_held(first: FlowTable, later: FlowTable, series: Series,
              gone: np.ndarray) -> FlowSummary | None:
    """Join ``later``'s held first records (flows that ended inside the later byte
    range, see :attr:`FlowTable.hold_first`) to the flows of ``first`` they continue,
    and end them there: read in one piece, those flows ended inside the later range.
    Held records that continue nothing are records of their own. The rows of
    ``first`` that end are marked in ``gone`` (the caller's to remove). Returns the
    summary of the records of their own, when they were counted as they were held
    (the caller's to add), else None: they went to ``first``'s sink."""
    held, later.held_first = later.held_first, later.new_held()
    if not len(held):
        return held.summary
    # Counted as they were held, the records of their own need nothing more: only
    # those that join a flow are taken back from the summary. Not when ``first`` does
    # not begin the capture (a range taken over, joined in the process that read it):
    # records it holds in turn are counted in its own summary.
    counted = held.summary is not None and not first.hold_first
    # A record of its own that ``first`` would have held too stays held (all of them
    # if ``first`` saw no flow, to be told by the merge with the range before).
    hold_until = -(1 << 62)
    if first.hold_first:
        hold_until = (1 << 62 if first.start_ts is None
                      else first.start_ts + first.idle_timeout_ns)
    # ``gone``: flows of ``first`` that have ended (joined, or idle too long): a later
    # held record of the same flow is one of its own.
    joins: list[np.ndarray] = []
    taken: list[Flows] = []
    for rows in held.batches(first.names, again=counted):
        rows.stats[:, S_HOLD] = rows.stats[:, S_FIRST] < hold_until
        n = len(rows)
        idx = find_flows.select(first.compiled)(first.keys, first.slots, rows.keys, n)
        hit = np.flatnonzero(idx >= 0)
        hit = hit[~gone[idx[hit]]]
        # Two records of one flow (pushed out of a full table, then seen again): the
        # earlier continues the flow before, the other is one of its own.
        hit = hit[np.sort(np.unique(idx[hit], return_index=True)[1])]
        # A flow the held record continues only after more than the idle timeout had
        # ended before it (as merge_tables has it): the record is one of its own.
        gap = rows.stats[hit, S_FIRST] - first.stats[idx[hit], S_LAST] > first.idle_timeout_ns
        ended = np.zeros(first.count, bool)
        ended[idx[hit[gap]]] = True
        if gap.any():
            first._emit(first.rows(ended))
        join = hit[~gap]
        if counted:
            joins.append(join)
            taken.append(rows.take(join))
        _fold(first, idx[join], rows.stats, rows.dscp_val, rows.dscp_cnt, join, series)
        # Every held record has ended, and so has the flow it is now part of: those
        # flows in table order, then the records of their own in held order.
        joined = np.zeros(first.count, bool)
        joined[idx[join]] = True
        first._emit(first.rows(joined))
        if not counted:
            _emit_own(first, rows, join)
        gone |= ended | joined
    if not counted:
        return None
    assert held.summary is not None
    if held.summary.take_back(Flows.concat(taken, first.names)):
        held.discard()
        return held.summary
    # Too many of the worst flows listed were records that joined a flow: count the
    # records of their own again, from the records.
    for rows, join in zip(held.batches(first.names), joins, strict=True):
        rows.stats[:, S_HOLD] = 0
        _emit_own(first, rows, join)
    return None


def _emit_own(first: FlowTable, rows: Flows, join: np.ndarray) -> None:
    """Hand ``rows`` but ``join`` (the held records that joined a flow) to ``first``."""
    if join.size:
        own = np.ones(len(rows), bool)
        own[join] = False
        rows = rows.take(own)
    first._emit(rows)
