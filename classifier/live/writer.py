"""Captured packets written to pcap files, rotated by size or by time.

The files hold exactly the packets counted (VLAN tags re-inserted, cooked headers
written), with nanosecond timestamps, so re-analysing them gives the live totals.
"""

from __future__ import annotations

import os
import pwd
import re
import struct

import numpy as np

from .._jit import kernel
from ..errors import O365TrafficError
from ..measures import parse_duration
from ..sources.batch import MAX_CAPLEN, Batch

__all__ = ["PcapWriter", "Rotation", "pack_records", "parse_rotation"]

#: Little-endian pcap, nanosecond timestamps.
_MAGIC_NS = 0xA1B23C4D
_SIZES = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


class Rotation:
    """When to start a new file: after ``max_bytes`` bytes or ``max_ns`` of packets."""

    def __init__(self, max_bytes: int | None = None, max_ns: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_ns = max_ns


def parse_rotation(text: str) -> Rotation:
    """``100MB``, ``1GiB`` (size) or ``1h``, ``30m`` (time). A file holds at least one
    packet, however large."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]i?[bB]|[bB])\s*", text)
    if m:
        size = int(float(m.group(1)) * _SIZES[m.group(2).lower()])
        if size < 1000:
            raise ValueError(f"--rotate {text!r}: files must hold at least 1 kB")
        return Rotation(max_bytes=size)
    try:
        return Rotation(max_ns=parse_duration(text))
    except ValueError:
        raise ValueError(
            f"--rotate {text!r}: expected a size (100MB, 1GiB) or a duration (1h, 30m)"
        ) from None


@kernel
def pack_records(buf, offset, caplen, wirelen, ts, out):  # type: ignore[no-untyped-def]
    """pcap records (16-byte header, then the data) of every packet, into ``out``."""
    pos = 0
    for i in range(offset.shape[0]):
        sec = ts[i] // 1_000_000_000
        nsec = ts[i] % 1_000_000_000
        n = caplen[i]
        for j, v in enumerate((sec, nsec, n, wirelen[i])):
            out[pos + 4 * j] = v & 0xFF
            out[pos + 4 * j + 1] = (v >> 8) & 0xFF
            out[pos + 4 * j + 2] = (v >> 16) & 0xFF
            out[pos + 4 * j + 3] = (v >> 24) & 0xFF
        pos += 16
        out[pos:pos + n] = buf[offset[i]:offset[i] + n]
        pos += n
    return pos


class PcapWriter:
    """Writes batches to ``path``, or with a rotation to ``stem-00000.pcap``,
    ``stem-00001.pcap``, ..."""

    def __init__(self, path: str, linktype: int, rotation: Rotation | None = None) -> None:
        self.path = path
        self.linktype = linktype
        self.rotation = rotation
        self.files: list[str] = []
        self._fh: int | None = None
        self._size = 0
        self._first_ts: int | None = None
        self._open()

    def _name(self, n: int) -> str:
        if self.rotation is None:
            return self.path
        stem, ext = os.path.splitext(self.path)
        return f"{stem}-{n:05d}{ext or '.pcap'}"

    def _open(self) -> None:
        self.close()
        name = self._name(len(self.files))
        try:
            self._fh = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(self._fh, struct.pack("<IHHiIII", _MAGIC_NS, 2, 4, 0, 0, MAX_CAPLEN,
                                           self.linktype))
        except OSError as exc:
            raise O365TrafficError(
                f"{name}: cannot write: {exc.strerror or exc} (as user "
                f"{_user()}; see --user)") from None
        self.files.append(name)
        self._size = 24
        self._first_ts = None

    def write(self, batch: Batch) -> None:
        """Append the packets of a batch (starting new files as the rotation says)."""
        n = len(batch)
        if n == 0:
            return
        sizes = np.cumsum(batch.caplen + 16)
        start = 0
        while start < n:
            stop = n
            rot = self.rotation
            if rot is not None and rot.max_bytes is not None:
                base = int(sizes[start - 1]) if start else 0
                fits = int(np.searchsorted(sizes, base + rot.max_bytes - self._size,
                                           side="right"))
                stop = min(stop, fits)
            if rot is not None and rot.max_ns is not None:
                if self._first_ts is None:
                    self._first_ts = int(batch.ts[start])
                late = np.flatnonzero(batch.ts[start:] >= self._first_ts + rot.max_ns)
                if late.size:
                    stop = min(stop, start + int(late[0]))
            if stop <= start:
                if self._size > 24:
                    self._open()
                    continue
                stop = start + 1  # a file holds at least one packet
            self._append(batch, start, stop)
            start = stop
            if start < n:
                self._open()

    def _append(self, batch: Batch, start: int, stop: int) -> None:
        sl = slice(start, stop)
        total = int((batch.caplen[sl] + 16).sum())
        out = np.empty(total, np.uint8)
        pack_records.compiled(batch.buf, batch.offset[sl], batch.caplen[sl],
                              batch.wirelen[sl], batch.ts[sl], out)
        assert self._fh is not None
        view = out.data
        while view:
            view = view[os.write(self._fh, view):]
        self._size += total
        if self._first_ts is None:
            self._first_ts = int(batch.ts[start])

    def close(self) -> None:
        if self._fh is not None:
            os.close(self._fh)
            self._fh = None


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
