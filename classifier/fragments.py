"""Later IP fragments take their datagram's category, ports and flow.

Only the first fragment of a datagram carries the transport header. A later fragment
takes the category, the ports and the client end of its datagram's first fragment,
keyed by (IP version, source, destination, protocol, identification); IPv6 leaves the
protocol out (RFC 8200: source, destination and identification name a datagram, and
the header after a fragment header differs between fragments when extension headers
follow it).

A later fragment seen *before* its first fragment is held back, not counted yet, and
released with its datagram's category when the first fragment arrives (in this batch,
a later one, or a later byte range of the capture). Fragments still held at the end
are released as ``other`` and reported as ``fragment-without-first``. Every packet is
counted exactly once, whatever the batch size or the split of the capture.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from itertools import islice

import numpy as np

from ._jit import kernel
from .decode import FLAG_FIRST_FRAGMENT, FLAG_LATER_FRAGMENT, Headers

__all__ = ["FRAGMENT_TABLE_SIZE", "FragmentTable", "Packets"]

#: Datagrams remembered for their later fragments; the oldest is forgotten first.
FRAGMENT_TABLE_SIZE = 65_536

Key = tuple[int, ...]
Info = tuple[int, int, int, int]  # category, source port, destination port, client side


@dataclass
class Packets:
    """Decoded packets with their classification: what the aggregation takes in."""

    h: Headers
    cat: np.ndarray
    side: np.ndarray
    wire: np.ndarray
    cap: np.ndarray
    ts: np.ndarray
    #: Positions of packets held back (fragments waiting for their first): they are
    #: not to be counted with this batch.
    held: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.cat.shape[0])

    def counted(self) -> Packets:
        """The packets to count: all but the held-back ones (copied only if any)."""
        if self.held is None:
            return self
        keep = np.ones(len(self), bool)
        keep[self.held] = False
        return self.take(keep)

    def take(self, index: np.ndarray) -> Packets:
        """The packets at ``index`` (a mask or positions), copied."""
        h = Headers(*(col[index] for col in self.h.as_tuple()))
        return Packets(h, self.cat[index], self.side[index], self.wire[index],
                       self.cap[index], self.ts[index])

    @staticmethod
    def concat(parts: list[Packets]) -> Packets:
        if len(parts) == 1:
            return parts[0]
        h = Headers(*(np.concatenate([getattr(p.h, f.name) for p in parts])
                      for f in fields(Headers)))
        return Packets(h, *(np.concatenate([getattr(p, name) for p in parts])
                            for name in ("cat", "side", "wire", "cap", "ts")))


class _Held:
    """The later fragments one batch held back, copied once when the batch is settled."""

    __slots__ = ("packets", "row")

    def __init__(self) -> None:
        self.packets: Packets | None = None
        self.row: dict[int, int] = {}  # index in the batch -> row of ``packets``


Ref = tuple[_Held, int]  # a held-back packet: its batch's holder and index in the batch


class FragmentTable:
    """First fragments seen, and later fragments held back (see the module docstring)."""

    def __init__(self, other: int, size: int = FRAGMENT_TABLE_SIZE) -> None:
        self.other = other
        self.size = size
        self.first: dict[Key, Info] = {}  # the latest first fragment per datagram
        self.earliest: dict[Key, Info] = {}  # the earliest one (to merge byte ranges)
        self.pending: dict[Key, list[Ref]] = {}
        self.dropped: list[Ref] = []  # held back, then pushed out by newer ones

    def settle(self, p: Packets, *, compiled: bool = False) -> tuple[Packets, Packets | None]:
        """Settle the fragments of a batch: returns the packets to count now (later
        fragments held back are left out: listed in ``held``) and the held-back
        packets released by first fragments of this batch, in their datagram's
        category. ``compiled``: match fragments within the batch with the compiled
        kernel (else with numpy, which costs no compilation on a tiny capture)."""
        h = p.h
        sel = np.flatnonzero(h.flags & (FLAG_FIRST_FRAGMENT | FLAG_LATER_FRAGMENT))
        if sel.size == 0:
            return p, None
        is_first = (h.flags[sel] & FLAG_FIRST_FRAGMENT) != 0
        keys = _key_matrix(h, sel)
        # A later fragment after its first fragment in this batch takes its info
        # (columnar); only first fragments and the rest need the tables, in order.
        source = np.full(sel.size, -1, np.int64)
        if is_first.any() and not is_first.all():
            (first_before.compiled if compiled else first_before)(keys, is_first, source)
        done = source >= 0
        if done.any():
            dst, src = sel[done], sel[source[done]]
            p.cat[dst] = p.cat[src]
            h.sport[dst] = h.sport[src]
            h.dport[dst] = h.dport[src]
            p.side[dst] = p.side[src]
        todo = sel[~done]
        holder = _Held()
        held: list[int] = []
        released: list[tuple[Ref, Info]] = []
        cat, sport, dport, side = p.cat, h.sport, h.dport, p.side
        first_seen, pending, size = self.first, self.pending, self.size
        # Python per fragment only where order matters: fragments are rare.
        for i, first, key, info in zip(
                todo.tolist(), is_first[~done].tolist(), map(tuple, keys[~done].tolist()),
                zip(cat[todo].tolist(), sport[todo].tolist(), dport[todo].tolist(),
                    side[todo].tolist(), strict=True), strict=True):
            if first:
                # Remembered as the latest first fragment of its datagram.
                first_seen.pop(key, None)
                first_seen[key] = info
                if len(first_seen) > size:
                    del first_seen[next(iter(first_seen))]
                if key not in self.earliest and len(self.earliest) < size:
                    self.earliest[key] = info
                if pending and key in pending:
                    released += [(ref, info) for ref in pending.pop(key)]
            else:
                known = first_seen.get(key)
                if known is not None:
                    cat[i], sport[i], dport[i], side[i] = known
                else:
                    held.append(i)
                    self._hold(key, (holder, i))
        if not held:
            return p, _release(released)
        index = np.array(held, np.int64)
        holder.packets = p.take(index)
        holder.row = {i: j for j, i in enumerate(held)}
        out = index if p.held is None else np.union1d(p.held, index)  # others' too
        now = Packets(p.h, p.cat, p.side, p.wire, p.cap, p.ts, held=out)
        return now, _release(released)

    def _hold(self, key: Key, ref: Ref) -> None:
        self.pending.setdefault(key, []).append(ref)
        if len(self.pending) > self.size:
            oldest = next(iter(self.pending))
            self.dropped.extend(self.pending.pop(oldest))

    def merge(self, later: FragmentTable) -> Packets | None:
        """Take in the table of the byte range that follows this one; returns the
        held-back packets that now find their datagram (ours in ``later``'s first
        fragments, ``later``'s in ours)."""
        released: list[tuple[Ref, Info]] = []
        for key in [k for k in self.pending if k in later.earliest]:
            released += [(ref, later.earliest[key]) for ref in self.pending.pop(key)]
        for key, refs in later.pending.items():
            info = self.first.get(key)
            if info is not None:
                released += [(ref, info) for ref in refs]
            else:
                for ref in refs:
                    self._hold(key, ref)
        _add_missing(self.earliest, later.earliest, self.size)
        # later's first fragments are the latest: each moves to the end (the newest) and
        # the oldest beyond the bound go, as process() does one by one; here in bulk.
        first = self.first
        for key in later.first.keys() & first.keys():
            del first[key]
        first.update(later.first)
        for key in list(islice(first, max(0, len(first) - self.size))):
            del first[key]
        _add_missing(self.earliest, later.first, self.size)
        self.dropped.extend(later.dropped)
        return _release(released)

    def finish(self) -> Packets | None:
        """The later fragments whose first fragment never came: counted as ``other``."""
        rest = [ref for refs in self.pending.values() for ref in refs] + self.dropped
        self.pending.clear()
        self.dropped = []
        return _gather(rest) if rest else None


def _add_missing(into: dict[Key, Info], source: dict[Key, Info], size: int) -> None:
    """Add ``source``'s entries that ``into`` lacks, in order, while ``into`` holds
    fewer than ``size`` (a set difference first: usually nothing is missing)."""
    room = size - len(into)
    if room <= 0:
        return
    missing = source.keys() - into.keys()
    if missing:
        for key in [k for k in source if k in missing][:room]:
            into[key] = source[key]


def _key_matrix(h: Headers, sel: np.ndarray) -> np.ndarray:
    """The datagram key of each packet of ``sel``, one row each (see Key)."""
    version = h.ip[sel]
    keys = np.empty((sel.size, 7), np.uint64)
    keys[:, 0] = version
    keys[:, 1] = h.src_hi[sel]
    keys[:, 2] = h.src_lo[sel]
    keys[:, 3] = h.dst_hi[sel]
    keys[:, 4] = h.dst_lo[sel]
    keys[:, 5] = np.where(version == 4, h.proto[sel], 0)
    keys[:, 6] = h.frag_id[sel]
    return keys


_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53,
                 0x94D049BB133111EB], np.uint64)


def _first_before_columns(keys: np.ndarray, is_first: np.ndarray, out: np.ndarray) -> None:
    """:func:`first_before` with numpy's whole-array operations."""
    m = keys.shape[0]
    # Rows grouped by a hash of their key, in position order within a group.
    digest = np.bitwise_xor.reduce(keys * _MIX, axis=1)
    order = np.argsort(digest, kind="stable")
    d = digest[order]
    group = np.concatenate(([0], np.cumsum(d[1:] != d[:-1])))
    # Running maximum of (group, position of a first fragment): the group's part
    # dominates, so a maximum never carries over into the next group.
    pos = np.where(is_first[order], order, -1)
    run = np.maximum.accumulate(group * (m + 1) + pos + 1) - group * (m + 1) - 1
    later = ~is_first[order]
    out[order[later]] = run[later]
    found = np.flatnonzero(out >= 0)
    # Equal hashes of different keys: left to the tables, which tell them apart.
    differ = (keys[found] != keys[out[found]]).any(axis=1)
    out[found[differ]] = -1


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(32)


@kernel(interpreted=_first_before_columns)
def first_before(keys, is_first, out):  # type: ignore[no-untyped-def]
    """For each later fragment (``is_first`` false), the row of the last first
    fragment before it with the same key, written to ``out`` (left as it is when
    there is none, and for first fragments). One pass over an open-addressing table
    of the latest first fragment per key: where numpy's sorting costs a dozen whole-
    array passes per batch for a few dozen fragments."""
    m = keys.shape[0]
    size = 16
    while size < 2 * m:
        size *= 2
    mask = size - 1
    latest = np.full(size, -1, np.int64)
    width = keys.shape[1]
    for i in range(m):
        h = np.uint64(0)
        for j in range(width):
            h = (h ^ keys[i, j]) * _GOLDEN
        slot = np.int64(h >> _SHIFT) & mask
        while True:
            r = latest[slot]
            if r < 0:
                break
            same = True
            for j in range(width):
                if keys[r, j] != keys[i, j]:
                    same = False
                    break
            if same:
                break
            slot = (slot + 1) & mask
        if is_first[i]:
            latest[slot] = i
        elif r >= 0:
            out[i] = r


def _gather(refs: list[Ref]) -> Packets:
    """The held-back packets ``refs`` as one batch, in the order given."""
    parts = []
    order = []
    by_batch: dict[int, tuple[_Held, list[int], list[int]]] = {}
    for n, (holder, i) in enumerate(refs):
        entry = by_batch.setdefault(id(holder), (holder, [], []))
        entry[1].append(holder.row[i])
        entry[2].append(n)
    for holder, rows, positions in by_batch.values():
        assert holder.packets is not None
        parts.append(holder.packets.take(np.array(rows, np.int64)))
        order += positions
    gathered = Packets.concat(parts)
    if len(parts) == 1:
        return gathered  # one batch's fragments, already in the order given
    return gathered.take(np.argsort(np.array(order), kind="stable"))


def _release(released: list[tuple[Ref, Info]]) -> Packets | None:
    """Held-back fragments, given their datagram's category, ports and client side."""
    if not released:
        return None
    p = _gather([ref for ref, _ in released])
    info = np.array([i for _, i in released], np.int64).reshape(-1, 4)
    p.cat[:] = info[:, 0]
    p.h.sport[:] = info[:, 1]
    p.h.dport[:] = info[:, 2]
    p.side[:] = info[:, 3]
    return p
