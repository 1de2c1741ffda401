"""Counting shared by the per-packet peers: categories, wire bytes and IP fragments."""

from __future__ import annotations

from typing import Any

try:
    from classifier.rules import OTHER
except ImportError:  # run from a checkout without the package installed
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from classifier.rules import OTHER

__all__ = ["FIRST", "LATER", "NONE", "FragKey", "Tally"]

#: Fragment role of a packet.
NONE, FIRST, LATER = 0, 1, 2
#: Names a fragmented datagram: the IP version, addresses and identification (and, for
#: IPv4, the protocol), in whatever form the decoder has them (bytes for the dpkt loop,
#: text and ints for scapy).
FragKey = tuple[object, ...]


class Tally:
    """Packets and wire bytes per category, with the fragment rule.

    A later (non-first) fragment takes its datagram's category, keyed by
    :data:`FragKey`. When it comes before its first fragment it is counted as
    ``other`` and moved to the datagram's category when the first fragment arrives,
    later in the file; one whose first fragment never comes stays ``other``
    (:attr:`orphans`). Both tables are unbounded: the whole file is remembered.
    """

    def __init__(self, categories: tuple[str, ...]) -> None:
        self.counts: dict[str, list[int]] = {cat: [0, 0] for cat in categories}
        self.packets = 0
        self.bytes = 0
        self.first: dict[FragKey, str] = {}
        self.pending: dict[FragKey, list[int]] = {}

    def add(self, cat: str, wire: int, role: int = NONE, key: FragKey | None = None) -> str:
        """Count one packet; returns the category it was counted in."""
        if role == LATER and key is not None:
            known = self.first.get(key)
            if known is None:
                waiting = self.pending.setdefault(key, [0, 0])
                waiting[0] += 1
                waiting[1] += wire
                cat = OTHER
            else:
                cat = known
        slot = self.counts[cat]
        slot[0] += 1
        slot[1] += wire
        self.packets += 1
        self.bytes += wire
        if role == FIRST and key is not None:
            self.first[key] = cat
            held = self.pending.pop(key) if key in self.pending else None
            if held is not None and cat != OTHER:
                other = self.counts[OTHER]
                other[0] -= held[0]
                other[1] -= held[1]
                slot[0] += held[0]
                slot[1] += held[1]
        return cat

    @property
    def orphans(self) -> int:
        """Later fragments whose first fragment was not (yet) seen."""
        return sum(p for p, _ in self.pending.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "totals": {"packets": self.packets, "bytes": self.bytes},
            "categories": {cat: {"packets": p, "bytes": b} for cat, (p, b) in self.counts.items()},
        }
