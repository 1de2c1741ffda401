"""Results that cross from worker processes through shared memory, not a pipe.

A byte range's result holds its flow table: about 10 MB of arrays on the 8M-packet
mix. Pickled into the pool's pipe, it is copied four times (into the pickle, through
the pipe in 64 KB writes, out of it, out of the pickle) while the process that merges
is still reading its own range, and it competes with that reading for the GIL: it
took 0.05-0.11 s to cross. Here the worker pickles the result with its arrays out of
band (pickle protocol 5) and writes them into its slot of a shared mapping made
before the fork; only the small rest goes through the pipe, and the receiving side
copies the arrays out of the slot in one pass each, which frees the slot.

A slot is written only once its last result has been taken (a flag per slot), and
only with results that fit it; any other result goes through the pipe as before.
"""

from __future__ import annotations

import mmap
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MIN_BYTES", "SLOT_BYTES", "Outbox", "Shipped"]

#: Each process's slot: larger than a range's result with a full flow table.
SLOT_BYTES = 64 << 20
#: Results with fewer bytes of arrays than this go through the pipe: too small to gain.
MIN_BYTES = 1 << 20
_ALIGN = 64  # each array starts on a cache line


@dataclass(frozen=True)
class Shipped:
    """A result whose arrays wait in slot ``slot``: its pickle without them, and
    where each array's bytes lie in the slot."""

    slot: int
    data: bytes
    spans: tuple[tuple[int, int], ...]


class Outbox:
    """One slot per worker process in a mapping shared by the pool (made before the
    fork; pages are used only as they are written)."""

    def __init__(self, ctx: Any, slots: int, slot_bytes: int = SLOT_BYTES) -> None:
        self.slots = slots
        self.slot_bytes = slot_bytes
        self._map = mmap.mmap(-1, max(1, slots * slot_bytes))
        # Per slot: 1 while a result written there has not been taken; then the
        # next free slot, for a worker joining the pool.
        self._flags = ctx.RawArray("q", slots + 1)
        self._lock = ctx.Lock()
        self.slot: int | None = None  # this worker's

    def join(self) -> None:
        """In a worker process: take the next free slot, if one is left."""
        with self._lock:
            nxt = int(self._flags[self.slots])
            if nxt < self.slots:
                self.slot = nxt
                self._flags[self.slots] = nxt + 1

    def ship(self, value: Any) -> Any:
        """``value`` as a :class:`Shipped` when its arrays are written to this worker's
        slot; else ``value`` itself, to be pickled through the pipe."""
        slot = self.slot
        if slot is None or self._flags[slot]:
            return value
        buffers: list[pickle.PickleBuffer] = []
        data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        raws = [b.raw() for b in buffers]
        total = sum(-r.nbytes % _ALIGN + r.nbytes for r in raws)
        if total < MIN_BYTES or total > self.slot_bytes:
            return value
        at = slot * self.slot_bytes
        spans = []
        with memoryview(self._map) as view:
            for raw in raws:
                view[at: at + raw.nbytes] = raw
                spans.append((at, raw.nbytes))
                at += raw.nbytes + -raw.nbytes % _ALIGN
        for b in buffers:
            b.release()
        self._flags[slot] = 1  # before the pipe says so: the receiver frees it
        return Shipped(slot, data, tuple(spans))

    def receive(self, value: Any) -> Any:
        """A worker's result: a :class:`Shipped` one unpickled with its arrays copied
        out of the slot (which is then free), any other as it came."""
        if not isinstance(value, Shipped):
            return value
        with memoryview(self._map) as view:
            # Writable copies: the arrays unpickled on them are the result's own.
            copies = [np.array(view[a: a + n], np.uint8) for a, n in value.spans]
        self._flags[value.slot] = 0
        return pickle.loads(value.data, buffers=copies)
