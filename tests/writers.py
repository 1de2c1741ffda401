"""Minimal pcap and pcapng writers for tests: the truth the readers are checked against."""

from __future__ import annotations

import struct
from collections.abc import Sequence

Record = tuple[int, bytes, int]  # (timestamp ns, captured bytes, original length)


def pcap(records: Sequence[Record], *, linktype: int = 1, big: bool = False,
         nanosecond: bool = False, snaplen: int = 262144) -> bytes:
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, data, orig in records:
        frac = ts % 1_000_000_000 if nanosecond else (ts % 1_000_000_000) // 1000
        out.append(struct.pack(e + "IIII", ts // 1_000_000_000, frac, len(data), orig) + data)
    return b"".join(out)


def _block(e: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def _option(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(big: bool = False) -> bytes:
    e = ">" if big else "<"
    return _block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(linktype: int = 1, *, big: bool = False, tsresol: int | None = None,
        snaplen: int = 0, tsoffset: int | None = None) -> bytes:
    e = ">" if big else "<"
    opts = b""
    if tsresol is not None:
        opts += _option(e, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += _option(e, 14, struct.pack(e + "q", tsoffset))
    if opts:
        opts += _option(e, 0, b"")
    return _block(e, 1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts)


def epb(iface: int, units: int, data: bytes, orig: int, *, big: bool = False) -> bytes:
    e = ">" if big else "<"
    body = struct.pack(e + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(data), orig)
    return _block(e, 6, body + data)


def spb(data: bytes, *, big: bool = False) -> bytes:
    e = ">" if big else "<"
    return _block(e, 3, struct.pack(e + "I", len(data)) + data)


def unknown_block(btype: int = 0x0BAD, size: int = 20, *, big: bool = False) -> bytes:
    return _block(">" if big else "<", btype, b"\xaa" * size)


def units_of(ts_ns: int, tsresol: int) -> int:
    """A timestamp in an interface's units (if_tsresol byte)."""
    if tsresol & 0x80:
        return (ts_ns << (tsresol & 0x7F)) // 1_000_000_000
    return ts_ns * 10 ** tsresol // 1_000_000_000


def ns_of(units: int, tsresol: int) -> int:
    """What a reader must make of ``units`` (whole nanoseconds, rounded down)."""
    if tsresol & 0x80:
        return (units * 1_000_000_000) >> (tsresol & 0x7F)
    return units * 1_000_000_000 // 10 ** tsresol
