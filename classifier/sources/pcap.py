"""The classic pcap format (pcap-savefile(5)): a 24-byte file header, then records.

Layout, as offsets in bytes::

    file header   magic:0/4 major:4/2 minor:6/2 reserved:8/8 snaplen:16/4 linktype:20/4
    record        ts_sec:0/4 ts_frac:4/4 incl_len:8/4 orig_len:12/4 data:16/incl_len

Records are not aligned and each one's offset depends on all before it, so the walk
is one sequential loop (a kernel); everything after it is columnar.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

from .._bytes import be32, le32, u8
from .._jit import kernel
from ..decode import Headers, decode_packets
from ..errors import CorruptCaptureError, NotACaptureError
from ._input import ByteInput
from .batch import BATCH_BYTES, DECODE_RUN, MAX_CAPLEN, MAX_PACKETS, Batch
from .ranges import Limit

__all__ = ["MAGICS", "PcapReader", "walk_pcap"]

#: magic as read little-endian -> (big-endian file, nanosecond timestamps, record header size)
MAGICS: dict[int, tuple[bool, bool, int]] = {
    0xA1B2C3D4: (False, False, 16),
    0xA1B23C4D: (False, True, 16),
    0xD4C3B2A1: (True, False, 16),
    0x4D3CB2A1: (True, True, 16),
    # Alexey Kuznetzov's patched libpcap: 8 more bytes per record header.
    0xA1B2CD34: (False, False, 24),
    0x34CDB2A1: (True, False, 24),
}

#: Bytes ahead of the record walk to touch (see walk_pcap).
PREFETCH = 4096
# Walk status codes.
NEED_MORE, FULL, CORRUPT = 0, 1, 2


@kernel(inline=True)
def record_header(buf, pos, big):  # type: ignore[no-untyped-def]
    """(ts_sec, ts_frac, incl_len, orig_len) of the record header at ``pos``."""
    if big:
        return be32(buf, pos), be32(buf, pos + 4), be32(buf, pos + 8), be32(buf, pos + 12)
    return le32(buf, pos), le32(buf, pos + 4), le32(buf, pos + 8), le32(buf, pos + 12)


@kernel
def walk_pcap(buf, pos, end, big, frac_ns, hdr_len, max_caplen, max_bytes, linktype,  # type: ignore[no-untyped-def]
              off, cap, wire, ts, ip, proto, sport, dport, flags, frag_id, src_hi, src_lo,
              dst_hi, dst_lo, dscp, tcp_flags, l4off, anomaly, ipend, name):
    """Walk records in ``buf[pos:end]`` into the output columns, and decode the
    packets' headers (:class:`~classifier.decode.Headers` columns, from ``ip`` on; the
    packets' link types are ``linktype``) a short run of records at a time, while their
    first bytes are still in cache: a separate pass over the whole batch would fetch
    them from memory again.

    Returns ``(count, next_pos, status, _)``: status NEED_MORE (the next record is not
    wholly in the buffer), FULL (the columns are full, or ``max_bytes`` walked) or
    CORRUPT (the record header at ``next_pos`` claims more than ``max_caplen`` bytes).
    """
    n = 0
    limit = off.shape[0]
    stop = pos + max_bytes
    touched = 0
    status = 1
    while status == 1 and n < limit and pos < stop:
        # A run of records walked, then decoded (see DECODE_RUN).
        first = n
        last = min(limit, n + DECODE_RUN)
        while n < last and pos < stop:
            if pos + hdr_len > end:
                status = 0
                break
            # Each record's place depends on the last one's length: a chain of
            # dependent loads. Touching memory further ahead, off the chain, lets those
            # misses overlap instead of queueing (a software prefetch).
            touched += u8(buf, min(pos + PREFETCH, end - 1))
            sec, frac, incl, orig = record_header(buf, pos, big)
            if incl > max_caplen:
                status = 2
                break
            if pos + hdr_len + incl > end:
                status = 0
                break
            off[n] = pos + hdr_len
            cap[n] = incl
            wire[n] = orig
            ts[n] = sec * 1_000_000_000 + frac * frac_ns
            pos += hdr_len + incl
            n += 1
        decode_packets(buf, off, cap, linktype, first, n, ip, proto, sport, dport, flags,
                       frag_id, src_hi, src_lo, dst_hi, dst_lo, dscp, tcp_flags, l4off,
                       anomaly, ipend, name)
    return n, pos, status, touched


#: Consecutive plausible record headers that make a boundary.
CHAIN = 16
#: Largest plausible original length (TSO/GRO frames exceed any MTU, not this).
MAX_WIRE = 1 << 24
#: Largest plausible jump between consecutive timestamps, in seconds.
MAX_GAP = 86_400


@kernel
def find_record(buf, start, big, frac_limit, hdr_len, chain):  # type: ignore[no-untyped-def]
    """The first offset >= ``start`` in ``buf`` where ``chain`` consecutive plausible
    record headers follow one another (or reach the end of ``buf`` exactly); -1 if
    there is none."""
    end = buf.shape[0]
    for cand in range(start, end - hdr_len + 1):
        pos = cand
        prev = -1
        ok = True
        for _ in range(chain):
            if pos == end:
                break
            if pos + hdr_len > end:
                ok = False
                break
            sec, frac, incl, orig = record_header(buf, pos, big)
            if frac >= frac_limit or incl > MAX_CAPLEN or incl > orig or orig > MAX_WIRE:
                ok = False
                break
            if prev >= 0 and (sec - prev > MAX_GAP or prev - sec > MAX_GAP):
                ok = False
                break
            prev = sec
            pos += hdr_len + incl
            if pos > end:
                ok = False
                break
        if ok:
            return cand
    return -1


class PcapReader:
    """Stream a pcap capture as batches."""

    format = "pcap"
    first_record = 24  # after the file header

    def __init__(self, source: ByteInput, *, compiled: bool, max_packets: int = MAX_PACKETS,
                 start: int = first_record, stop: int | None = None, skip_damaged: bool = False,
                 limit: Limit | None = None):
        self.source = source
        self.path = source.path
        self.compiled = compiled
        head, _ = source.view(0)
        if len(head) < 24:
            raise NotACaptureError(self.path, f"pcap file header cut short ({len(head)} of 24 bytes)")
        (magic,) = struct.unpack_from("<I", head.data, 0)
        self.big, self.nanosecond, self.record_header = MAGICS[magic]
        e = ">" if self.big else "<"
        self.version = struct.unpack_from(e + "HH", head.data, 4)
        self.snaplen, linktype = struct.unpack_from(e + "II", head.data, 16)
        # The upper bits may carry an FCS length and flags; the link type is the low 16.
        self.linktype = linktype & 0xFFFF
        self.link_types = {self.linktype}
        self.complete = True
        self.cut_at: int | None = None
        self.position = max(24, start)
        self.stop = stop  # a byte range's end: the reading ends there as at end of file
        #: Moves ``stop`` back while the range is read (another process takes the rest).
        self.limit = limit
        self.skip_damaged = skip_damaged
        #: (offset, length) of every damaged stretch skipped
        self.skipped: list[tuple[int, int]] = []
        self._walk = walk_pcap.select(compiled)
        self._max_packets = max_packets
        self._linktypes = np.full(max_packets, self.linktype, np.int64)  # never written

    def __iter__(self) -> Iterator[Batch]:
        pos = self.position
        frac_ns = 1 if self.nanosecond else 1000
        while True:
            buf, eof = self.source.view(pos)
            if self.stop is not None and pos + len(buf) >= self.stop:
                buf, eof = buf[: max(0, self.stop - pos)], True
            end = len(buf)
            rel = 0
            while True:
                if self.limit is not None:
                    # Say how far this batch may reach (records start before its byte
                    # budget and are at most MAX_CAPLEN long); learn the stop now.
                    self.stop = self.limit.claim(
                        pos + rel + BATCH_BYTES + MAX_CAPLEN + self.record_header)
                    if pos + end >= self.stop:
                        end, eof = max(rel, self.stop - pos), True
                off = np.empty(self._max_packets, np.int64)
                cap = np.empty(self._max_packets, np.int64)
                wire = np.empty(self._max_packets, np.int64)
                ts = np.empty(self._max_packets, np.int64)
                headers = Headers.empty(self._max_packets)
                n, nxt, status, _ = self._walk(
                    buf, rel, end, self.big, frac_ns, self.record_header, MAX_CAPLEN,
                    BATCH_BYTES, self._linktypes, off, cap, wire, ts, *headers.as_tuple(),
                )
                n, nxt, status = int(n), int(nxt), int(status)
                if n:
                    yield Batch(buf, off[:n], cap[:n], wire[:n], ts[:n], self._linktypes[:n],
                                pos + rel, headers.head(n))
                self.position = pos + nxt
                if status == CORRUPT:
                    if not self.skip_damaged:
                        incl = _u32(buf, nxt + 8, self.big)
                        raise CorruptCaptureError(
                            self.path,
                            f"corrupt record header: captured length {incl} is over "
                            f"{MAX_CAPLEN}",
                            pos + nxt,
                        )
                    bad = pos + nxt
                    resume = self._resync(bad + 1)
                    if resume is None:  # nothing valid up to the end
                        last = self.stop if self.stop is not None else self.source.end_from(bad)
                        self.skipped.append((bad, last - bad))
                        self.complete = False
                        self.cut_at = None
                        return
                    self.skipped.append((bad, resume - bad))
                    self.complete = False  # bytes were skipped
                    pos, rel = resume, -1
                    break
                rel = nxt
                if status == NEED_MORE:
                    break
            if rel == -1:  # resynchronised past damage: read on from pos
                continue
            if eof:
                if rel < end or self.source.cut_short:
                    self.complete = False
                    self.cut_at = pos + rel
                if self.source.failure is not None:
                    raise self.source.failure
                return
            if rel == 0:  # only with a window smaller than the largest record
                raise CorruptCaptureError(self.path, "record larger than the read window", pos)
            pos += rel


    def _resync(self, start: int) -> int | None:
        """The next offset from ``start`` where a chain of plausible records begins,
        or None if there is none before the end."""
        hdr = self.record_header
        frac_limit = 1_000_000_000 if self.nanosecond else 1_000_000
        overlap = CHAIN * (MAX_CAPLEN + hdr)
        find = find_record.select(self.compiled)
        while True:
            buf, eof = self.source.view(start)
            if self.stop is not None and start + len(buf) >= self.stop:
                buf, eof = buf[: max(0, self.stop - start)], True
            found = int(find(buf, 0, self.big, frac_limit, hdr, CHAIN))
            if found >= 0:
                return start + found
            if eof or len(buf) <= overlap:
                return None
            start += len(buf) - overlap


def _u32(buf: np.ndarray, at: int, big: bool) -> int:
    return int.from_bytes(bytes(buf[at : at + 4]), "big" if big else "little")
