"""Byte inputs: a window of a capture's bytes, slid forward as records are consumed.

Regular files are memory-mapped one window at a time (no copy, and the resident set
stays one window); pipes, stdin and gzip streams are read into one reused buffer.
"""

from __future__ import annotations

import mmap
import os
import zlib
from typing import BinaryIO

import numpy as np

from ..errors import CorruptCaptureError, NotACaptureError

__all__ = ["WINDOW", "ByteInput", "MappedFile", "StreamInput", "open_input"]

#: Bytes visible at once. Larger than any record (256 KiB) by far.
WINDOW = 16 << 20
_PAGE = mmap.ALLOCATIONGRANULARITY
_GZIP_MAGIC = b"\x1f\x8b"


class ByteInput:
    """A capture's bytes, seen through a window that starts at a given offset."""

    path: str
    size: int | None  # total bytes when known (regular uncompressed files)
    compressed: bool = False
    #: The stream ended before its own end (a cut gzip member, a skip past the end).
    cut_short: bool = False
    #: Damage found after the bytes already delivered (a bad gzip trailer): raised by
    #: the reader once those bytes are read.
    failure: CorruptCaptureError | None = None
    warnings: tuple[str, ...] = ()

    def view(self, pos: int) -> tuple[np.ndarray, bool]:
        """Bytes from absolute offset ``pos``: up to a window, and whether they reach EOF."""
        raise NotImplementedError

    def end_from(self, at: int) -> int:
        """The offset of the end of the data, reading through it from ``at`` if the
        size is not known."""
        if self.size is not None:
            return self.size
        while True:
            buf, eof = self.view(at)
            at += len(buf)
            if eof:
                return at

    def close(self) -> None:
        """Release the file."""


class MappedFile(ByteInput):
    """A regular file, mapped one window at a time."""

    size: int

    def __init__(self, path: str, fd: int, size: int, window: int = WINDOW) -> None:
        self.path = path
        self.size = size
        self._fd = fd
        self._window = window

    def view(self, pos: int) -> tuple[np.ndarray, bool]:
        if pos >= self.size:
            return np.zeros(0, np.uint8), True
        start = pos - pos % _PAGE
        length = min(self.size - start, self._window + (pos - start))
        mm = mmap.mmap(self._fd, length, mmap.MAP_SHARED, mmap.PROT_READ, offset=start)
        # The array keeps the mapping alive; it is unmapped when the last view is dropped.
        arr = np.frombuffer(mm, np.uint8)[pos - start :]
        return arr, start + length >= self.size

    def close(self) -> None:
        os.close(self._fd)


class StreamInput(ByteInput):
    """A non-seekable or compressed stream, read into one reused buffer."""

    def __init__(self, path: str, stream: BinaryIO, *, compressed: bool, window: int = WINDOW):
        self.path = path
        self.size = None
        self.compressed = compressed
        self._stream = stream
        self._buf = np.empty(window, np.uint8)
        self._base = 0  # absolute offset of _buf[0]
        self._len = 0  # valid bytes in _buf
        self._eof = False

    def view(self, pos: int) -> tuple[np.ndarray, bool]:
        if pos < self._base:
            raise ValueError("stream inputs only move forward")
        drop = pos - self._base
        if drop >= self._len:
            self._discard(drop - self._len)
            self._base, self._len = pos, 0
        elif drop:
            # Slide the unread tail to the front of the buffer.
            self._buf[: self._len - drop] = self._buf[drop : self._len]
            self._base, self._len = pos, self._len - drop
        self._fill()
        return self._buf[: self._len], self._eof

    def _fill(self) -> None:
        mv = self._buf.data
        while not self._eof and self._len < len(self._buf):
            n = self._read_into(mv[self._len :])
            if n == 0:
                self._eof = True
            self._len += n

    def _discard(self, count: int) -> None:
        scratch = self._buf.data
        while count > 0 and not self._eof:
            n = self._read_into(scratch[: min(count, len(scratch))])
            if n == 0:
                self._eof = True
            count -= n
        if count > 0:
            self.cut_short = True  # asked to skip past the end of the stream

    def _read_into(self, mv: memoryview) -> int:
        n = self._stream.readinto(mv) or 0  # type: ignore[attr-defined]
        if n == 0 and isinstance(self._stream, Gunzip):
            self.cut_short = self.cut_short or self._stream.cut_short
            self.warnings = tuple(self._stream.warnings)
            if self._stream.error is not None and self.failure is None:
                self.failure = CorruptCaptureError(
                    self.path, f"compressed stream damaged: {self._stream.error}",
                    self._stream.raw_offset)
        return n

    def close(self) -> None:
        self._stream.close()


def open_input(path: str, *, window: int = WINDOW) -> ByteInput:
    """Open a capture's bytes: ``-`` is stdin; gzip is recognised by its content."""
    try:
        if path == "-":
            raw: BinaryIO = os.fdopen(os.dup(0), "rb", buffering=0)
            return _maybe_gzip(path, raw, window)
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise NotACaptureError(path, f"cannot open: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not _is_regular(st.st_mode):
            return _maybe_gzip(path, os.fdopen(fd, "rb", buffering=0), window)
        head = os.pread(fd, 2, 0)
        if head == _GZIP_MAGIC:
            return _maybe_gzip(path, os.fdopen(fd, "rb", buffering=0), window)
        return MappedFile(path, fd, st.st_size, window)
    except OSError as exc:
        os.close(fd)
        raise NotACaptureError(path, f"cannot read: {exc.strerror or exc}") from None


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def _maybe_gzip(path: str, raw: BinaryIO, window: int) -> ByteInput:
    stream = StreamInput(path, raw, compressed=False, window=window)
    head, _ = stream.view(0)
    if bytes(head[:2]) == _GZIP_MAGIC:
        # Re-wrap: the bytes already read are replayed in front of the rest of the stream.
        prefix = bytes(head)
        return StreamInput(path, Gunzip(_Prefixed(prefix, raw)),  # type: ignore[arg-type]
                           compressed=True, window=window)
    return stream


class Gunzip:
    """A gzip stream decompressed a chunk at a time, so that damage loses nothing
    decompressed before it: a stream cut short ends as a cut (``cut_short``), a bad
    trailer is an ``error`` found after all the data, trailing bytes a warning."""

    CHUNK = 1 << 16
    TRAILER = 8

    def __init__(self, raw: _Prefixed) -> None:
        self.raw = raw
        self._z = zlib.decompressobj(wbits=31)
        self._out = b""
        self._held = b""  # the last bytes read, held back: they may be the trailer
        self._done = False
        self.raw_offset = 0
        self.cut_short = False
        self.error: str | None = None
        self.warnings: list[str] = []

    def readinto(self, mv: memoryview) -> int:
        while not self._out and not self._done:
            self._step()
        n = min(len(mv), len(self._out))
        mv[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _step(self) -> None:
        chunk = self.raw.read(self.CHUNK)
        data = self._held + chunk
        if chunk:
            # Decompress all but the last bytes: a damaged trailer then fails alone.
            self._held = data[-self.TRAILER :]
            data = data[: -self.TRAILER]
        else:
            self._held = b""
        try:
            self._out += self._z.decompress(data)
            self.raw_offset += len(data)
            while self._z.eof and self._z.unused_data:
                rest = self._z.unused_data + self._held
                self._held = b""
                if not rest.startswith(b"\x1f\x8b"):
                    if rest.strip(b"\0"):
                        self.warnings.append("bytes after the end of the gzip stream ignored")
                    self._drain_garbage()
                    return
                self._z = zlib.decompressobj(wbits=31)  # the next gzip member
                self._out += self._z.decompress(rest)
        except zlib.error as exc:
            self.error = str(exc)
            self._done = True
            return
        if not chunk:
            self._done = True
            if not self._z.eof:
                self.cut_short = True

    def _drain_garbage(self) -> None:
        while self.raw.read(self.CHUNK):
            pass
        self._done = True

    def close(self) -> None:
        self.raw.close()


class _Prefixed:
    """A read-only stream: some bytes already read, then the rest of ``raw``."""

    def __init__(self, prefix: bytes, raw: BinaryIO) -> None:
        self._prefix = prefix
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            if n < 0 or n >= len(self._prefix):
                out, self._prefix = self._prefix, b""
                rest = self._raw.read(-1 if n < 0 else n - len(out)) or b""
                return out + rest
            out, self._prefix = self._prefix[:n], self._prefix[n:]
            return out
        return self._raw.read(n) or b""

    def close(self) -> None:
        self._raw.close()
