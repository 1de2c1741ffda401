"""The pcapng format: a chain of blocks, in sections with their own byte order.

Every block is ``type:0/4 total_length:4/4 body total_length:-4/4``. The packet blocks
(Enhanced 6, Simple 3, obsolete Packet 2) are walked by a kernel; Section Header (SHB)
and Interface Description (IDB) blocks, which are rare, stop the kernel and are parsed
here. Unknown blocks are skipped by their length.

    EPB body  interface:0/4 ts_high:4/4 ts_low:8/4 caplen:12/4 origlen:16/4 data:20
    SPB body  origlen:0/4 data:4
    PB body   interface:0/2 drops:2/2 ts_high:4/4 ts_low:8/4 caplen:12/4 origlen:16/4 data:20
    SHB body  byte_order_magic:0/4 major:4/2 minor:6/2 section_length:8/8 options:16
    IDB body  linktype:0/2 reserved:2/2 snaplen:4/4 options:8
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

from .._bytes import be16, be32, le16, le32
from .._jit import kernel
from ..decode import Headers, decode_packets
from ..errors import CorruptCaptureError, NotACaptureError
from ._input import WINDOW, ByteInput
from .batch import BATCH_BYTES, DECODE_RUN, MAX_CAPLEN, MAX_PACKETS, Batch
from .ranges import Interface, RangeReport, SectionState

__all__ = ["SHB_TYPE", "PcapngReader", "find_block", "leading_state", "walk_pcapng"]

SHB_TYPE = 0x0A0D0D0A
IDB_TYPE = 1
BYTE_ORDER_MAGIC = 0x1A2B3C4D

# Walk status codes.
NEED_MORE, FULL, CORRUPT, HEADER, SKIP, BAD_INTERFACE = 0, 1, 2, 3, 4, 5


@kernel
def walk_pcapng(buf, pos, end, big, n_if, if_snap, if_lt, max_bytes, off, cap, wire, ts,  # type: ignore[no-untyped-def]
                ifid, linktype, ip, proto, sport, dport, flags, frag_id, src_hi, src_lo,
                dst_hi, dst_lo, dscp, tcp_flags, l4off, anomaly, ipend, name):
    """Walk packet blocks in ``buf[pos:end]`` into the output columns, and decode the
    packets' headers (:class:`~classifier.decode.Headers` columns, from ``ip`` on) a
    short run at a time, while their first bytes are still in cache.

    ``ts`` receives raw timestamps in interface units; simple packet blocks, which have
    none, get interface -1. ``linktype`` receives each packet's interface's link type
    (``if_lt``; a simple packet block's is the first interface's). Returns ``(count,
    next_pos, status)``; status is NEED_MORE, FULL (columns full or ``max_bytes``
    walked), CORRUPT (bad block length at ``next_pos``), HEADER (an SHB or IDB starts at
    ``next_pos``), SKIP (a non-packet block at ``next_pos`` extends past the buffer) or
    BAD_INTERFACE.
    """
    n = 0
    limit = off.shape[0]
    stop = pos + max_bytes
    status = 1
    while status == 1 and n < limit and pos < stop:
        first = n
        last = min(limit, n + DECODE_RUN)
        while n < last and pos < stop:
            if pos + 8 > end:
                status = 0
                break
            if big:
                btype = be32(buf, pos)
                blen = be32(buf, pos + 4)
            else:
                btype = le32(buf, pos)
                blen = le32(buf, pos + 4)
            if btype == 0x0A0D0D0A or btype == 1:
                status = 3
                break
            if blen < 12 or blen % 4 != 0:
                status = 2
                break
            is_packet = btype == 6 or btype == 3 or btype == 2
            if pos + blen > end:
                if is_packet and blen <= 65536 + MAX_CAPLEN:
                    status = 0
                elif is_packet:
                    status = 2
                else:
                    status = 4
                break
            t = pos + blen - 4
            trail = be32(buf, t) if big else le32(buf, t)
            if trail != blen:
                status = 2
                break
            b = pos + 8
            if btype == 6 or btype == 2:
                if blen < 32:
                    status = 2
                    break
                if btype == 6:
                    iface = be32(buf, b) if big else le32(buf, b)
                elif big:
                    iface = be16(buf, b)
                else:
                    iface = le16(buf, b)
                if big:
                    hi = be32(buf, b + 4)
                    lo = be32(buf, b + 8)
                    incl = be32(buf, b + 12)
                    orig = be32(buf, b + 16)
                else:
                    hi = le32(buf, b + 4)
                    lo = le32(buf, b + 8)
                    incl = le32(buf, b + 12)
                    orig = le32(buf, b + 16)
                if iface >= n_if:
                    status = 5
                    break
                if incl > blen - 32 or incl > MAX_CAPLEN:
                    status = 2
                    break
                off[n] = b + 20
                cap[n] = incl
                wire[n] = orig
                # Units past 2**63 are no time at all: the top bit is dropped, not wrapped.
                ts[n] = ((hi & 0x7FFFFFFF) << 32) | lo
                ifid[n] = iface
                linktype[n] = if_lt[iface]
                n += 1
            elif btype == 3:
                if blen < 16:  # no room for the original length
                    status = 2
                    break
                if n_if < 1:
                    status = 5
                    break
                orig = be32(buf, b) if big else le32(buf, b)
                incl = orig
                snap = if_snap[0]
                if snap > 0 and incl > snap:
                    incl = snap
                if incl > blen - 16:
                    incl = blen - 16
                off[n] = b + 4
                cap[n] = incl
                wire[n] = orig
                ts[n] = 0
                ifid[n] = -1
                linktype[n] = if_lt[0]
                n += 1
            pos += blen
        decode_packets(buf, off, cap, linktype, first, n, ip, proto, sport, dport, flags,
                       frag_id, src_hi, src_lo, dst_hi, dst_lo, dscp, tcp_flags, l4off,
                       anomaly, ipend, name)
    return n, pos, status


#: Consecutive valid blocks that make a resynchronisation point.
CHAIN = 8


@kernel(inline=True)
def plausible_type(btype):  # type: ignore[no-untyped-def]
    """A block type some writer uses: a section header, or a small number, possibly
    with the local-use (bit 31) and do-not-copy (bit 30) bits."""
    return btype == 0x0A0D0D0A or (btype & 0x3FFFFFFF) < 0x10000


@kernel
def find_block(buf, start, big, chain, n_if):  # type: ignore[no-untyped-def]
    """The first offset >= ``start`` in ``buf`` (4-aligned from ``start``) where
    ``chain`` consecutive well-formed blocks follow one another (length a multiple of
    4, at least 12, repeated in the trailer), or reach the end of ``buf``; -1 if none.

    With ``n_if`` >= 0, stricter, to start a byte range: every block of the chain also
    has a plausible type, and each packet block names one of the ``n_if`` interfaces
    and holds its captured bytes within its length."""
    end = buf.shape[0]
    strict = n_if >= 0
    for cand in range(start, end - 12 + 1, 4):
        pos = cand
        ok = True
        for _ in range(chain):
            if pos == end:
                break
            if pos + 12 > end:
                ok = False
                break
            btype = be32(buf, pos) if big else le32(buf, pos)
            blen = be32(buf, pos + 4) if big else le32(buf, pos + 4)
            if blen < 12 or blen % 4 != 0 or blen > 16 * 1024 * 1024 or pos + blen > end \
                    or (strict and not plausible_type(btype)):
                ok = False
                break
            t = pos + blen - 4
            trail = be32(buf, t) if big else le32(buf, t)
            if trail != blen:
                ok = False
                break
            if strict and btype == 6:
                b = pos + 8
                if blen < 32:
                    ok = False
                    break
                iface = be32(buf, b) if big else le32(buf, b)
                incl = be32(buf, b + 12) if big else le32(buf, b + 12)
                if iface >= n_if or 32 + (incl + 3) // 4 * 4 > blen:
                    ok = False
                    break
            elif strict and btype == 3 and (blen < 16 or n_if < 1):
                ok = False
                break
            pos += blen
        if ok:
            return cand
    return -1


class PcapngReader:
    """Stream a pcapng capture as batches."""

    format = "pcapng"
    first_record = 0  # the section header block

    def __init__(self, source: ByteInput, *, compiled: bool, max_packets: int = MAX_PACKETS,
                 skip_damaged: bool = False, start: int = 0, stop: int | None = None,
                 state: SectionState | None = None, report: RangeReport | None = None):
        self.source = source
        self.path = source.path
        self.compiled = compiled
        self.skip_damaged = skip_damaged
        #: (offset, length) of every damaged stretch skipped
        self.skipped: list[tuple[int, int]] = []
        self.link_types: set[int] = set()
        self.complete = True
        self.cut_at: int | None = None
        self.position = 0
        self.big = False
        self.interfaces: list[Interface] = []
        self._last_ns = 0
        self._walk = walk_pcapng.select(compiled)
        self._max_packets = max_packets
        head, _ = source.view(0)
        if len(head) < 28:
            raise NotACaptureError(
                self.path, f"pcapng section header cut short ({len(head)} of 28 bytes)"
            )
        (bom,) = struct.unpack_from("<I", head.data, 8)
        if bom not in (BYTE_ORDER_MAGIC, 0x4D3C2B1A):
            raise NotACaptureError(self.path, f"pcapng byte-order magic 0x{bom:08x} not valid")
        # A byte range: blocks from ``start`` (a block boundary, in a section whose
        # state is ``state``) to ``stop``, where the reading ends as at end of file.
        self.start = start
        self.stop = stop
        self.report = report
        if start > 0:
            if state is None:
                raise ValueError("a pcapng byte range starting mid-file needs its section state")
            self.big, self.interfaces, self._last_ns = (
                state.big, list(state.interfaces), state.last_ns)
            self.link_types = {i.linktype for i in state.interfaces}
            self.position = start
        if report is not None:
            report.start_state = state if start > 0 else None
        #: Whether a timestamp came from this reader's own blocks (or the file start).
        self._ts_known = start == 0

    def state(self) -> SectionState:
        """The section state where the reading stands."""
        return SectionState(self.big, tuple(self.interfaces), self._last_ns)

    def _view(self, pos: int) -> tuple[np.ndarray, bool]:
        """The source's window at ``pos``, ending at ``stop`` as a file would."""
        buf, eof = self.source.view(pos)
        if self.stop is not None and pos + len(buf) >= self.stop:
            return buf[: max(0, self.stop - pos)], True
        return buf, eof

    def _end(self) -> int | None:
        return self.stop if self.stop is not None else self.source.size

    def __iter__(self) -> Iterator[Batch]:
        try:
            yield from self._batches()
        finally:
            if self.report is not None:
                self.report.end_state = self.state()

    def _batches(self) -> Iterator[Batch]:
        pos = self.start
        while True:
            buf, eof = self._view(pos)
            end = len(buf)
            rel = 0
            while True:
                size = self._max_packets
                off = np.empty(size, np.int64)
                cap = np.empty(size, np.int64)
                wire = np.empty(size, np.int64)
                raw_ts = np.empty(size, np.int64)
                ifid = np.empty(size, np.int64)
                lt = np.empty(size, np.int64)
                headers = Headers.empty(size)
                snaps = np.array([i.snaplen for i in self.interfaces] or [0], np.int64)
                link = np.array([i.linktype for i in self.interfaces] or [0], np.int64)
                n, nxt, status = self._walk(
                    buf, rel, end, self.big, len(self.interfaces), snaps, link, BATCH_BYTES,
                    off, cap, wire, raw_ts, ifid, lt, *headers.as_tuple(),
                )
                n, nxt, status = int(n), int(nxt), int(status)
                if n:
                    yield self._batch(buf, pos + rel, off[:n], cap[:n], wire[:n], raw_ts[:n],
                                      ifid[:n], lt[:n], headers.head(n))
                self.position = pos + nxt
                rel = nxt
                if status == FULL:
                    continue
                if status == CORRUPT:
                    if not self.skip_damaged:
                        raise CorruptCaptureError(self.path, self._corrupt(buf, rel), pos + rel)
                    bad = pos + rel
                    resume = self._resync(bad + 4)
                    self.complete = False
                    if resume is None:  # nothing valid up to the end
                        last = self.stop if self.stop is not None else self.source.end_from(bad)
                        self.skipped.append((bad, last - bad))
                        return
                    self.skipped.append((bad, resume - bad))
                    pos = resume
                    rel = -1
                    break
                if status == BAD_INTERFACE:
                    raise CorruptCaptureError(
                        self.path,
                        f"packet block names interface {self._iface(buf, rel)}, but the "
                        f"section describes {len(self.interfaces)}",
                        pos + rel,
                    )
                if status == HEADER:
                    consumed = self._header(buf, rel, end, pos + rel, eof)
                    if consumed is None:  # the header block is not wholly in the window
                        break
                    rel += consumed
                    continue
                if status == SKIP:
                    blen = self._blen(buf, rel)
                    limit = self._end()
                    if limit is not None and pos + rel + blen > limit:
                        self.complete = False
                        self.cut_at = pos + rel
                        return
                    pos = pos + rel + blen
                    rel = -1  # marks the window as left
                    break
                break  # NEED_MORE
            if rel == -1:
                continue
            if eof:
                if rel < end or self.source.cut_short:
                    self.complete = False
                    self.cut_at = pos + rel
                if self.source.failure is not None:
                    raise self.source.failure
                return
            if rel == 0:
                # The window started at this block and still does not hold it.
                raise CorruptCaptureError(
                    self.path, f"block of {self._blen(buf, 0)} bytes larger than the read window",
                    pos,
                )
            pos += rel

    def _resync(self, start: int) -> int | None:
        """The next offset from ``start`` where a chain of well-formed blocks begins."""
        overlap = CHAIN * (65536 + MAX_CAPLEN)
        find = find_block.select(self.compiled)
        while True:
            buf, eof = self._view(start)
            found = int(find(buf, 0, self.big, CHAIN, -1))
            if found >= 0:
                return start + found
            if eof or len(buf) <= overlap:
                return None
            start += len(buf) - overlap

    # -- rare blocks, parsed in Python ---------------------------------------------------

    def _header(self, buf: np.ndarray, rel: int, end: int, at: int, eof: bool) -> int | None:
        """Parse the SHB or IDB at ``buf[rel]``; return its length, or None if cut."""
        if rel + 12 > end:
            self._cut(at, eof)
            return None
        (btype,) = struct.unpack_from("<I", buf.data, rel)
        if btype == SHB_TYPE:
            (bom,) = struct.unpack_from("<I", buf.data, rel + 8)
            if bom == BYTE_ORDER_MAGIC:
                big = False
            elif bom == 0x4D3C2B1A:
                big = True
            else:
                raise CorruptCaptureError(
                    self.path, f"section header byte-order magic 0x{bom:08x} not valid", at
                )
            e = ">" if big else "<"
            (blen,) = struct.unpack_from(e + "I", buf.data, rel + 4)
            if blen < 28 or blen % 4:
                raise CorruptCaptureError(self.path, f"section header length {blen} not valid", at)
            if rel + blen > end:
                self._cut(at, eof, blen)
                return None
            self._check_trailer(buf, rel, blen, e, at)
            self.big = big
            self.interfaces = []  # interfaces are numbered per section
            return int(blen)
        e = ">" if self.big else "<"
        (blen,) = struct.unpack_from(e + "I", buf.data, rel + 4)
        if blen < 20 or blen % 4:
            raise CorruptCaptureError(
                self.path, f"interface description length {blen} not valid", at
            )
        if rel + blen > end:
            self._cut(at, eof, blen)
            return None
        self._check_trailer(buf, rel, blen, e, at)
        linktype, _, snaplen = struct.unpack_from(e + "HHI", buf.data, rel + 8)
        resolution, offset_s = (False, 6), 0
        for code, value in _options(buf, rel + 16, rel + blen - 4, e):
            if code == 9 and len(value) >= 1:
                # Past 2^-63 or 10^-19 s the units no longer fit 64 bits anyway.
                resolution = (bool(value[0] & 0x80), min(value[0] & 0x7F, 63))
            elif code == 14 and len(value) >= 8:
                (offset,) = struct.unpack(e + "q", value[:8])
                # Beyond a few centuries an offset is damage: ignored, not overflowed.
                offset_s = offset if abs(offset) < 10**10 else 0
        self.interfaces.append(Interface(linktype, snaplen, resolution, offset_s))
        self.link_types.add(linktype)
        return int(blen)

    def _cut(self, at: int, eof: bool, blen: int = 0) -> None:
        """A header block not wholly in the window: too large, cut by the end, or
        waiting for the next window."""
        if blen > WINDOW:
            raise CorruptCaptureError(self.path, f"header block length {blen} too large", at)
        if eof:
            self.complete = False
            self.cut_at = at

    def _check_trailer(self, buf: np.ndarray, rel: int, blen: int, e: str, at: int) -> None:
        (trail,) = struct.unpack_from(e + "I", buf.data, rel + blen - 4)
        if trail != blen:
            raise CorruptCaptureError(
                self.path, f"block length {blen} does not match its trailer {trail}", at
            )

    def _blen(self, buf: np.ndarray, rel: int) -> int:
        (blen,) = struct.unpack_from(">I" if self.big else "<I", buf.data, rel + 4)
        return int(blen)

    def _iface(self, buf: np.ndarray, rel: int) -> int:
        e = ">" if self.big else "<"
        (btype,) = struct.unpack_from(e + "I", buf.data, rel)
        if btype == 2:
            return int(struct.unpack_from(e + "H", buf.data, rel + 8)[0])
        if btype == 3:
            return 0
        return int(struct.unpack_from(e + "I", buf.data, rel + 8)[0])

    def _corrupt(self, buf: np.ndarray, rel: int) -> str:
        blen = self._blen(buf, rel) if rel + 8 <= len(buf) else 0
        if blen < 12 or blen % 4:
            return f"corrupt block: length {blen} is not a multiple of 4 of at least 12"
        if rel + blen <= len(buf):
            e = ">" if self.big else "<"
            (trail,) = struct.unpack_from(e + "I", buf.data, rel + blen - 4)
            if trail != blen:
                return f"corrupt block: length {blen} does not match its trailer {trail}"
        return f"corrupt packet block: length {blen} or its captured length not valid"

    def _batch(self, buf: np.ndarray, start: int, off: np.ndarray, cap: np.ndarray,
               wire: np.ndarray, raw_ts: np.ndarray, ifid: np.ndarray, lt: np.ndarray,
               headers: Headers) -> Batch:
        simple = ifid < 0
        if simple.any():
            ifid = np.where(simple, 0, ifid)
        first = int(ifid[0])
        if (ifid == first).all():
            ts = _to_ns(raw_ts, self.interfaces[first])
        else:
            ts = np.empty_like(raw_ts)
            for i in np.unique(ifid):
                sel = ifid == i
                ts[sel] = _to_ns(raw_ts[sel], self.interfaces[int(i)])
        if simple[0] and not self._ts_known and self.report is not None:
            self.report.depends_on_last_ns = True
        self._ts_known = True
        if simple.any():
            # A simple packet block has no timestamp: it takes the previous packet's.
            idx = np.where(simple, -1, np.arange(len(ts)))
            idx = np.maximum.accumulate(idx)
            ts = np.where(idx >= 0, ts[np.maximum(idx, 0)], self._last_ns)
        self._last_ns = int(ts[-1])
        return Batch(buf, off, cap, wire, ts, lt, start, headers)


def _to_ns(raw: np.ndarray, iface: Interface) -> np.ndarray:
    """Interface units to nanoseconds since the epoch."""
    power2, exp = iface.resolution
    units = raw.astype(np.uint64)
    if power2:
        whole = units >> np.uint64(exp)
        frac = units & np.uint64((1 << exp) - 1)
        # Scale the fraction in two steps so it never overflows 64 bits.
        shift = max(0, exp - 30)
        frac_ns = ((frac >> np.uint64(shift)) * np.uint64(1_000_000_000)) >> np.uint64(exp - shift)
        ns = whole * np.uint64(1_000_000_000) + frac_ns
    elif exp <= 9:
        ns = units * np.uint64(10 ** (9 - exp))
    else:
        ns = units // np.uint64(10 ** min(exp - 9, 19))
    out = ns.astype(np.int64)
    if iface.offset_s:
        out += iface.offset_s * 1_000_000_000
    return out


def _options(buf: np.ndarray, start: int, end: int, e: str) -> Iterator[tuple[int, bytes]]:
    """The options of a block body: (code, value) until code 0 or the end."""
    pos = start
    while pos + 4 <= end:
        code, length = struct.unpack_from(e + "HH", buf.data, pos)
        if code == 0:
            return
        value = bytes(buf[pos + 4 : min(end, pos + 4 + length)])
        yield code, value
        pos += 4 + length + (-length % 4)


def leading_state(path: str) -> tuple[SectionState, int] | None:
    """The section state after the header blocks (SHB, IDBs) that open an uncompressed
    pcapng file, and the offset of the first block after them; None for anything else
    (or damaged headers)."""
    from ._input import open_input

    try:
        source = open_input(path)
    except NotACaptureError:
        return None
    try:
        buf, eof = source.view(0)
        if source.compressed or len(buf) < 28 or struct.unpack_from("<I", buf.data, 0)[0] != SHB_TYPE:
            return None
        reader = PcapngReader(source, compiled=False)
        pos = 0
        while pos + 8 <= len(buf):
            (btype,) = struct.unpack_from(">I" if reader.big else "<I", buf.data, pos)
            if pos > 0 and btype != IDB_TYPE:
                break
            consumed = reader._header(buf, pos, len(buf), pos, eof)
            if consumed is None:
                break
            pos += consumed
        return reader.state(), pos
    except (CorruptCaptureError, NotACaptureError):
        return None
    finally:
        source.close()
