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
from itertools import chain, islice

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
        # The latest first fragment per datagram, and the earliest one (to merge byte
        # ranges): dicts, or after crossing between processes packed (see _Packed)
        # until they are needed whole.
        self._first: Remembered = {}
        self._earliest: Remembered = {}
        #: Whether to keep ``earliest``: only a byte range that a range before it will
        #: take in needs it (not the first range, nor a whole capture).
        self.keep_earliest = True
        self.pending: dict[Key, list[Ref]] = {}
        self.dropped: list[Ref] = []  # held back, then pushed out by newer ones

    @property
    def first(self) -> dict[Key, Info]:
        """The latest first fragment per datagram (the newest last), at most ``size``."""
        if not isinstance(self._first, dict):
            self._first = self._first.to_dict()
        return self._first

    @first.setter
    def first(self, value: dict[Key, Info]) -> None:
        self._first = value

    @property
    def earliest(self) -> dict[Key, Info]:
        """The earliest first fragment per datagram, at most ``size``."""
        if not isinstance(self._earliest, dict):
            self._earliest = self._earliest.to_dict()
        return self._earliest

    @earliest.setter
    def earliest(self, value: dict[Key, Info]) -> None:
        self._earliest = value

    def __getstate__(self) -> dict[str, object]:
        # Tens of thousands of remembered datagrams: as arrays they cross between
        # processes in a few milliseconds, where as dicts of tuples they took 20 ms to
        # pickle and 30 ms to unpickle; the merge that takes them in looks up only
        # the few its later range still waits for.
        state = dict(self.__dict__)
        state["_first"] = _pack(self._first)
        state["_earliest"] = _pack(self._earliest)
        return state

    def settle(self, p: Packets, *, compiled: bool = False) -> tuple[Packets, Packets | None]:
        """Settle the fragments of a batch: returns the packets to count now (later
        fragments held back are left out: listed in ``held``) and the held-back
        packets released by first fragments of this batch, in their datagram's
        category. ``compiled``: match fragments within the batch with the compiled
        kernel (else with numpy, which costs no compilation on a tiny capture)."""
        h = p.h
        # A later fragment after its first fragment in this batch takes its info (in
        # one pass); only first fragments and the rest need the tables, in order.
        todo = np.empty(len(p), np.int64)
        count = int((match_within.compiled if compiled else match_within)(
            h.flags, h.ip, h.src_hi, h.src_lo, h.dst_hi, h.dst_lo, h.proto, h.frag_id,
            p.cat, h.sport, h.dport, p.side, todo))
        if count == 0:
            return p, None
        todo = todo[:count]
        is_first = (h.flags[todo] & FLAG_FIRST_FRAGMENT) != 0
        keys = _key_matrix(todo, h.ip, h.src_hi, h.src_lo, h.dst_hi, h.dst_lo, h.proto,
                           h.frag_id)
        holder = _Held()
        held: list[int] = []
        released: list[tuple[Ref, Info]] = []
        cat, sport, dport, side = p.cat, h.sport, h.dport, p.side
        first_seen, pending, size = self.first, self.pending, self.size
        earliest = self.earliest if self.keep_earliest else None
        # Python per fragment only where order matters: fragments are rare.
        for i, first, key, info in zip(
                todo.tolist(), is_first.tolist(), map(tuple, keys.tolist()),
                zip(cat[todo].tolist(), sport[todo].tolist(), dport[todo].tolist(),
                    side[todo].tolist(), strict=True), strict=True):
            if first:
                # Remembered as the latest first fragment of its datagram.
                first_seen.pop(key, None)
                first_seen[key] = info
                if len(first_seen) > size:
                    del first_seen[next(iter(first_seen))]
                if earliest is not None and key not in earliest and len(earliest) < size:
                    earliest[key] = info
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
        if self.pending:
            found = _lookup(later._earliest, list(self.pending))
            for key in [k for k in self.pending if k in found]:
                released += [(ref, found[key]) for ref in self.pending.pop(key)]
        if isinstance(self._first, _Chain):
            self._first = self._first.to_dict()  # once, for this merge and the next
        found = _lookup(self._first, list(later.pending)) if later.pending else {}
        for key, refs in later.pending.items():
            info = found.get(key)
            if info is not None:
                released += [(ref, info) for ref in refs]
            else:
                for ref in refs:
                    self._hold(key, ref)
        if self.keep_earliest:
            _add_missing(self.earliest, later.earliest, self.size)
            _add_missing(self.earliest, later.first, self.size)
        # later's first fragments are the latest: each moves to the end (the newest) and
        # the oldest beyond the bound go, as settle() does one by one; here in bulk, or
        # once they are needed (the last merge of a capture's ranges needs them not).
        if isinstance(self._first, dict) and isinstance(later._first, dict):
            _append_newest(self._first, later._first, self.size)
        else:
            self._first = _Chain([self._first, later._first], self.size)
        self.dropped.extend(later.dropped)
        return _release(released)

    def finish(self) -> Packets | None:
        """The later fragments whose first fragment never came: counted as ``other``."""
        rest = [ref for refs in self.pending.values() for ref in refs] + self.dropped
        self.pending.clear()
        self.dropped = []
        return _gather(rest) if rest else None


class _Packed:
    """Remembered first fragments as arrays, in the dict's order: keys (one row each)
    and their infos. Looked up without being unpacked (see :func:`_lookup`)."""

    def __init__(self, keys: np.ndarray, infos: np.ndarray) -> None:
        self.keys = keys
        self.infos = infos
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> tuple[np.ndarray, np.ndarray]:
        return self.keys, self.infos

    def __setstate__(self, state: tuple[np.ndarray, np.ndarray]) -> None:
        self.keys, self.infos = state
        self._sorted = None

    def to_dict(self) -> dict[Key, Info]:
        return dict(zip(map(tuple, self.keys.tolist()), map(tuple, self.infos.tolist()),
                        strict=True))

    def get(self, wanted: list[Key]) -> dict[Key, Info]:
        """The entries of the keys ``wanted`` that are here."""
        width = self.keys.shape[1]
        sure = [k for k in wanted if len(k) == width]
        if not sure:
            return {}
        if self._sorted is None:
            digest = _digest(self.keys)
            order = np.argsort(digest, kind="stable")
            self._sorted = digest[order], order
        digests, order = self._sorted
        ask = np.array(sure, np.uint64).reshape(-1, width)
        want = _digest(ask)
        found: dict[Key, Info] = {}
        for key, row, d, i in zip(sure, ask, want.tolist(),
                                  np.searchsorted(digests, want).tolist(), strict=True):
            # Keys with equal digests are adjacent: this one among them, if anywhere.
            while i < digests.size and int(digests[i]) == d:
                j = order[i]
                if (self.keys[j] == row).all():
                    a, b, c, e = self.infos[j].tolist()
                    found[key] = (a, b, c, e)
                    break
                i += 1
        return found


class _Chain:
    """Remembered first fragments of neighbouring byte ranges, oldest first, merged
    (as :func:`_append_newest` does) only once needed whole."""

    def __init__(self, parts: list[Remembered], size: int) -> None:
        self.parts: list[dict[Key, Info] | _Packed] = []
        for part in parts:
            self.parts += part.parts if isinstance(part, _Chain) else [part]
        self.size = size

    def to_dict(self) -> dict[Key, Info]:
        first, *later = self.parts
        merged = first.to_dict() if isinstance(first, _Packed) else dict(first)
        for part in later:
            _append_newest(merged, part.to_dict() if isinstance(part, _Packed) else part,
                           self.size)
        return merged


Remembered = dict[Key, Info] | _Packed | _Chain


def _pack(entries: Remembered) -> Remembered:
    """``entries`` packed as arrays, to cross between processes (as they are when all
    keys do not have one length, which datagram keys do)."""
    if not isinstance(entries, dict) or not entries:
        return entries
    width = len(next(iter(entries)))
    n = len(entries)
    if set(map(len, entries)) != {width}:
        return entries
    keys = np.fromiter(chain.from_iterable(entries), np.uint64, count=width * n)
    infos = np.fromiter(chain.from_iterable(entries.values()), np.int64, count=4 * n)
    return _Packed(keys.reshape(n, width), infos.reshape(n, 4))


def _lookup(entries: Remembered, wanted: list[Key]) -> dict[Key, Info]:
    """The entries of the keys ``wanted`` in ``entries``, unpacking nothing."""
    if isinstance(entries, _Packed):
        return entries.get(wanted)
    table = entries.to_dict() if isinstance(entries, _Chain) else entries
    return {k: table[k] for k in wanted if k in table}


def _digest(keys: np.ndarray) -> np.ndarray:
    """A 64-bit digest of each row of ``keys``."""
    out = np.zeros(keys.shape[0], np.uint64)
    for c in range(keys.shape[1]):
        out = (out ^ keys[:, c]) * _MIX[c % _MIX.size]
    return out


def _append_newest(first: dict[Key, Info], later: dict[Key, Info], size: int) -> None:
    """``later``'s entries moved to the end of ``first`` (the newest), the oldest beyond
    ``size`` gone: as remembering them one by one does."""
    for key in later.keys() & first.keys():
        del first[key]
    first.update(later)
    for key in list(islice(first, max(0, len(first) - size))):
        del first[key]


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


def _key_matrix(sel: np.ndarray, ip: np.ndarray, src_hi: np.ndarray, src_lo: np.ndarray,
                dst_hi: np.ndarray, dst_lo: np.ndarray, proto: np.ndarray,
                frag_id: np.ndarray) -> np.ndarray:
    """The datagram key of each packet of ``sel``, one row each (see Key), from the
    header columns."""
    version = ip[sel]
    keys = np.empty((sel.size, 7), np.uint64)
    keys[:, 0] = version
    keys[:, 1] = src_hi[sel]
    keys[:, 2] = src_lo[sel]
    keys[:, 3] = dst_hi[sel]
    keys[:, 4] = dst_lo[sel]
    keys[:, 5] = np.where(version == 4, proto[sel], 0)
    keys[:, 6] = frag_id[sel]
    return keys


_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53,
                 0x94D049BB133111EB], np.uint64)


def _match_within_columns(flags, ip, src_hi, src_lo, dst_hi, dst_lo, proto, frag_id,  # type: ignore[no-untyped-def]
                          cat, sport, dport, side, todo):
    """:func:`match_within` with numpy's whole-array operations (for tiny captures,
    run without compiling). Rows whose key hashes equal another's are left to the
    tables, which tell them apart: a match may be missed here, never made wrong."""
    sel = np.flatnonzero(flags & (FLAG_FIRST_FRAGMENT | FLAG_LATER_FRAGMENT))
    if sel.size == 0:
        return 0
    is_first = (flags[sel] & FLAG_FIRST_FRAGMENT) != 0
    keys = _key_matrix(sel, ip, src_hi, src_lo, dst_hi, dst_lo, proto, frag_id)
    m = sel.size
    source = np.full(m, -1, np.int64)
    if is_first.any() and not is_first.all():
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
        source[order[later]] = run[later]
        found = np.flatnonzero(source >= 0)
        differ = (keys[found] != keys[source[found]]).any(axis=1)
        source[found[differ]] = -1
    done = source >= 0
    if done.any():
        dst, src = sel[done], sel[source[done]]
        cat[dst] = cat[src]
        sport[dst] = sport[src]
        dport[dst] = dport[src]
        side[dst] = side[src]
    rest = sel[~done]
    todo[: rest.size] = rest
    return rest.size


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(32)


@kernel(interpreted=_match_within_columns)
def match_within(flags, ip, src_hi, src_lo, dst_hi, dst_lo, proto, frag_id, cat, sport,  # type: ignore[no-untyped-def]
                 dport, side, todo):
    """Fragments matched within a batch, in one pass: each later fragment with a first
    fragment of its datagram before it in the batch takes the category, ports and
    client side of the last such one. The other fragments (first fragments, and later
    ones without such a first) are written to ``todo`` in order, for the tables;
    returns how many. Keys are compared whole, held in an open-addressing table of the
    latest first fragment per key: where numpy's sorting costs a dozen whole-array
    passes per batch for a few dozen fragments."""
    n = flags.shape[0]
    m = 0
    for i in range(n):
        if flags[i] & 6:
            m += 1
    if m == 0:
        return 0
    size = 16
    while size < 2 * m:
        size *= 2
    mask = size - 1
    latest = np.full(size, -1, np.int64)
    count = 0
    for i in range(n):
        f = flags[i]
        if (f & 6) == 0:
            continue
        v = ip[i]
        pr = np.uint64(proto[i]) if v == 4 else np.uint64(0)
        h = (np.uint64(v) ^ _GOLDEN) * _GOLDEN
        h = (h ^ src_hi[i]) * _GOLDEN
        h = (h ^ src_lo[i]) * _GOLDEN
        h = (h ^ dst_hi[i]) * _GOLDEN
        h = (h ^ dst_lo[i]) * _GOLDEN
        h = (h ^ pr) * _GOLDEN
        h = (h ^ np.uint64(frag_id[i])) * _GOLDEN
        slot = np.int64(h >> _SHIFT) & mask
        while True:
            r = latest[slot]
            if r < 0:
                break
            if ip[r] == v and src_hi[r] == src_hi[i] and src_lo[r] == src_lo[i] \
                    and dst_hi[r] == dst_hi[i] and dst_lo[r] == dst_lo[i] \
                    and frag_id[r] == frag_id[i] and (v != 4 or proto[r] == proto[i]):
                break
            slot = (slot + 1) & mask
        if f & 4:
            latest[slot] = i
            todo[count] = i
            count += 1
        elif r >= 0:
            cat[i] = cat[r]
            sport[i] = sport[r]
            dport[i] = dport[r]
            side[i] = side[r]
        else:
            todo[count] = i
            count += 1
    return count


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
