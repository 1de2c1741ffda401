"""Capture sources: open a capture by its content and stream it as batches of packets."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Protocol

from .._jit import COMPILE_THRESHOLD
from ..errors import NotACaptureError
from ._input import WINDOW, ByteInput, open_input
from .batch import MAX_CAPLEN, MAX_PACKETS, Batch
from .pcap import MAGICS, PcapReader
from .pcapng import SHB_TYPE, PcapngReader

__all__ = [
    "MAX_CAPLEN",
    "MAX_PACKETS",
    "Batch",
    "CaptureReader",
    "PcapReader",
    "PcapngReader",
    "open_capture",
]


class CaptureReader(Protocol):
    """What every capture reader offers: batches, and what it learnt on the way."""

    path: str
    format: str
    #: Where the capture's first record or block begins (a byte range starting there
    #: has no range before it).
    first_record: int
    source: ByteInput
    link_types: set[int]
    complete: bool
    cut_at: int | None
    position: int
    compiled: bool

    def __iter__(self) -> Iterator[Batch]: ...


def open_capture(
    path: str,
    *,
    compiled: bool | None = None,
    max_packets: int = MAX_PACKETS,
    window: int = WINDOW,
    byte_range: tuple[int, int] | None = None,
    skip_damaged: bool = False,
) -> CaptureReader:
    """Open a pcap or pcapng capture (optionally gzip-compressed; ``-`` is stdin).

    The format is told by the first bytes, never by the name. ``compiled`` chooses the
    compiled kernels; by default they are used unless the capture is small.
    ``byte_range`` (uncompressed files only) reads just the records from ``start``, a
    record or block boundary, to ``stop``, where the reading ends as at the end of the
    file; a pcapng range starting mid-file is a :class:`~.ranges.ByteRange` carrying
    its section's state, and its report receives the state it ends with.
    ``skip_damaged`` resynchronises after a corrupt record or block on the next chain
    of plausible records (pcap) or well-formed blocks (pcapng) instead of stopping
    (``reader.skipped`` says where).
    Raises :class:`NotACaptureError` for anything that is not a readable capture.
    """
    source = open_input(path, window=window)
    try:
        head, _ = source.view(0)
        if len(head) == 0:
            raise NotACaptureError(path, "empty file, not a capture")
        if len(head) < 4:
            raise NotACaptureError(path, f"not a capture: only {len(head)} bytes")
        (magic,) = struct.unpack_from("<I", head.data, 0)
        if compiled is None:
            compiled = source.size is None or source.size >= COMPILE_THRESHOLD
        reader: CaptureReader
        if byte_range is not None and (source.compressed
                                       or (magic not in MAGICS and magic != SHB_TYPE)):
            raise ValueError("byte ranges are for uncompressed pcap and pcapng files")
        if magic in MAGICS:
            start, stop = byte_range if byte_range is not None else (24, None)
            reader = PcapReader(source, compiled=compiled, max_packets=max_packets,
                                start=start, stop=stop, skip_damaged=skip_damaged,
                                limit=getattr(byte_range, "limit", None))
        elif magic == SHB_TYPE:
            ng_start, ng_stop = byte_range if byte_range is not None else (0, None)
            reader = PcapngReader(source, compiled=compiled, max_packets=max_packets,
                                  skip_damaged=skip_damaged, start=ng_start, stop=ng_stop,
                                  state=getattr(byte_range, "state", None),
                                  report=getattr(byte_range, "report", None))
        else:
            what = "gzip data that is" if source.compressed else "a file that is"
            raise NotACaptureError(
                path,
                f"{what} not a pcap or pcapng capture (starts with bytes "
                f"{bytes(head[:4]).hex(' ')})",
            )
        if source.compressed:
            reader.format += ".gz"
        return reader
    except BaseException:
        source.close()
        raise
