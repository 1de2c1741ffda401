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

import numpy as np

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

    def __len__(self) -> int:
        return int(self.cat.shape[0])

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

    def settle(self, p: Packets) -> tuple[Packets, Packets | None]:
        """Settle the fragments of a batch: returns the packets to count now (later
        fragments held back are left out) and the held-back packets released by
        first fragments of this batch, in their datagram's category."""
        h = p.h
        sel = np.flatnonzero(h.flags & (FLAG_FIRST_FRAGMENT | FLAG_LATER_FRAGMENT))
        if sel.size == 0:
            return p, None
        flags = h.flags[sel].tolist()
        holder = _Held()
        held: list[int] = []
        released: list[tuple[Ref, Info]] = []
        # Python per fragment only: fragments are rare and must be taken in order.
        for i, flag, key in zip(sel.tolist(), flags, _keys(h, sel), strict=True):
            if flag & FLAG_FIRST_FRAGMENT:
                info = (int(p.cat[i]), int(h.sport[i]), int(h.dport[i]), int(p.side[i]))
                self._remember(key, info)
                for ref in self.pending.pop(key, ()):
                    released.append((ref, info))
            else:
                known = self.first.get(key)
                if known is not None:
                    p.cat[i], h.sport[i], h.dport[i], p.side[i] = known
                else:
                    held.append(i)
                    self._hold(key, (holder, i))
        if held:
            holder.packets = p.take(np.array(held, np.int64))
            holder.row = {i: j for j, i in enumerate(held)}
        now = p
        if held:
            keep = np.ones(len(p), bool)
            keep[held] = False
            now = p.take(keep)
        return now, _release(released)

    def _hold(self, key: Key, ref: Ref) -> None:
        self.pending.setdefault(key, []).append(ref)
        if len(self.pending) > self.size:
            oldest = next(iter(self.pending))
            self.dropped.extend(self.pending.pop(oldest))

    def _remember(self, key: Key, info: Info) -> None:
        self.first.pop(key, None)
        self.first[key] = info
        if len(self.first) > self.size:
            del self.first[next(iter(self.first))]
        if key not in self.earliest and len(self.earliest) < self.size:
            self.earliest[key] = info

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
        for key, info in later.earliest.items():
            if key not in self.earliest and len(self.earliest) < self.size:
                self.earliest[key] = info
        for key, info in later.first.items():
            self._remember(key, info)
        self.dropped.extend(later.dropped)
        return _release(released)

    def finish(self) -> Packets | None:
        """The later fragments whose first fragment never came: counted as ``other``."""
        rest = [ref for refs in self.pending.values() for ref in refs] + self.dropped
        self.pending.clear()
        self.dropped = []
        return _gather(rest) if rest else None


def _keys(h: Headers, sel: np.ndarray) -> zip[tuple[int, ...]]:
    version = h.ip[sel]
    proto = np.where(version == 4, h.proto[sel], 0)
    return zip(version.tolist(), h.src_hi[sel].tolist(), h.src_lo[sel].tolist(),
               h.dst_hi[sel].tolist(), h.dst_lo[sel].tolist(), proto.tolist(),
               h.frag_id[sel].tolist(), strict=True)


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
