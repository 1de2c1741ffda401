"""Byte inputs: a window of a capture's bytes, slid forward as records are consumed.

Regular files are memory-mapped one window at a time (no copy, and the resident set
stays one window); pipes, stdin and gzip streams are read into one reused buffer.
"""

from __future__ import annotations

import gzip
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

    def view(self, pos: int) -> tuple[np.ndarray, bool]:
        """Bytes from absolute offset ``pos``: up to a window, and whether they reach EOF."""
        raise NotImplementedError

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

    def _read_into(self, mv: memoryview) -> int:
        try:
            return self._stream.readinto(mv) or 0  # type: ignore[attr-defined]
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            # A cut or damaged gzip stream: what was decompressed so far stands.
            self._eof = True
            raise CorruptCaptureError(
                self.path, f"compressed stream damaged: {exc}", self._base + self._len
            ) from None

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
        return StreamInput(
            path, gzip.GzipFile(fileobj=_Prefixed(prefix, raw), mode="rb"),  # type: ignore[call-overload]  # a duck-typed reader
            compressed=True, window=window,
        )
    return stream


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
