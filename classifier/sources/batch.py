"""A batch of raw packets held as columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..decode import Headers

__all__ = ["BATCH_BYTES", "DECODE_RUN", "MAX_CAPLEN", "MAX_PACKETS", "Batch"]

#: The largest captured length libpcap accepts; a record claiming more is corrupt.
MAX_CAPLEN = 262_144
#: Packets per batch at most.
MAX_PACKETS = 65_536
#: Capture bytes per batch at most: a batch is decoded while the headers it walked
#: are still in cache (a few thousand full-size packets; fewer, larger batches cost
#: less per packet than 2 MiB ones did).
BATCH_BYTES = 4 << 20
#: Records the readers walk before they decode them (a few hundred KB at most): the
#: run's first bytes are still in cache, and the walk's chain of dependent loads (each
#: record's place depends on the last one's length) runs unhindered by the decoding.
DECODE_RUN = 256


@dataclass(frozen=True)
class Batch:
    """Raw packets: packet ``i`` is ``buf[offset[i] : offset[i] + caplen[i]]``.

    A batch is valid until the next batch of the same source is requested (the
    buffer may be reused).
    """

    buf: np.ndarray  # uint8, the window the offsets point into
    offset: np.ndarray  # int64
    caplen: np.ndarray  # int64, bytes captured
    wirelen: np.ndarray  # int64, bytes on the wire (the record's original length)
    ts: np.ndarray  # int64, nanoseconds since the epoch
    linktype: np.ndarray  # int64, LINKTYPE_ value of each packet's interface
    start: int  # absolute byte offset of the first record (for messages)
    #: the packets' header columns when the reader decoded them as it walked
    headers: Headers | None = None

    def __len__(self) -> int:
        return int(self.offset.shape[0])
