"""Byte ranges of one capture, read by separate readers and merged in file order.

A pcap range needs only its offsets. A pcapng range starting mid-file also needs the
state of the section it starts in (byte order, interfaces, the last timestamp): the
planner hands in what it read at the start of the file, and the reader reports the
state it ends with, so the merge can check that each range started with the state
its predecessor ended with (and read it again with that state if not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ByteRange", "Interface", "Limit", "RangeReport", "SectionState"]


class Limit(Protocol):
    """A range's end that may move back while the range is read (see
    :mod:`classifier.steal`)."""

    def claim(self, upto: int) -> int:
        """Record that the reader may read up to byte ``upto``; return the range's end
        now (never before a byte already claimed)."""
        ...


@dataclass(frozen=True)
class Interface:
    """What an IDB says about its packets."""

    linktype: int
    snaplen: int
    resolution: tuple[bool, int]  # (power of two, exponent): units of 10^-n or 2^-n s
    offset_s: int = 0


@dataclass(frozen=True)
class SectionState:
    """Where a pcapng reader stands: the section's byte order and interfaces, and the
    last packet's timestamp (a simple packet block, which has none, takes it)."""

    big: bool
    interfaces: tuple[Interface, ...]
    last_ns: int = 0

    def continues(self, start: SectionState, depends_on_last_ns: bool) -> bool:
        """Whether a range read from ``start`` reads as it would following this state."""
        return (self.big == start.big and self.interfaces == start.interfaces
                and (not depends_on_last_ns or self.last_ns == start.last_ns))


@dataclass
class RangeReport:
    """What the reader of a range learnt that the merge needs (pcapng only)."""

    start_state: SectionState | None = None
    end_state: SectionState | None = None
    #: A simple packet block came before any timestamped packet: the range's result
    #: depends on the start state's ``last_ns``.
    depends_on_last_ns: bool = False


class ByteRange(tuple[int, int]):
    """``(start, stop)``, with the section state to start a pcapng range with."""

    state: SectionState | None
    report: RangeReport
    #: pcap: the end may move back while the range is read (not sent to other processes).
    limit: Limit | None

    def __new__(cls, start: int, stop: int, state: SectionState | None = None,
                report: RangeReport | None = None, limit: Limit | None = None) -> ByteRange:
        self = super().__new__(cls, (start, stop))
        self.state = state
        self.report = report if report is not None else RangeReport()
        self.limit = limit
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (ByteRange, (self[0], self[1], self.state, self.report))

    @property
    def start(self) -> int:
        return self[0]

    @property
    def stop(self) -> int:
        return self[1]
