"""Live capture: the batch pipeline fed from a network interface.

    source (TPACKET_V3 ring, or scapy) ──► Batch ──► count_batch ──► Aggregator
                                            │                          │
                                            └──► PcapWriter            └──► Snapshot ──► table,
                                                 (rotated files)                         metrics

A :class:`LiveRun` counts the batches of a source exactly as a file's are counted and
finishes into the same :class:`~classifier.result.AnalysisResult`.
"""

from __future__ import annotations

import numpy as np

from ..fragments import FragmentTable
from ..lookup import CompiledRules
from ..pipeline import Aggregator, Options, count_batch
from ..sources.batch import Batch
from .base import (
    CaptureSetupError,
    Interface,
    LiveSource,
    LiveStats,
    interface_index,
    list_interfaces,
)
from .privileges import drop_privileges
from .session import LiveRun, Snapshot
from .writer import PcapWriter, Rotation, parse_rotation

__all__ = [
    "BACKENDS",
    "CaptureSetupError",
    "Interface",
    "LiveRun",
    "LiveSource",
    "LiveStats",
    "PcapWriter",
    "Rotation",
    "Snapshot",
    "drop_privileges",
    "interface_index",
    "list_interfaces",
    "open_source",
    "parse_rotation",
    "warm_up",
]

BACKENDS = ("af_packet", "scapy")


def open_source(interface: str, *, backend: str = "af_packet", bpf: str | None = None,
                ring_bytes: int = 64 << 20) -> LiveSource:
    """Open a capture on ``interface`` (``any``: all of them, cooked). Raises
    :class:`CaptureSetupError` (one line) when it cannot."""
    if backend == "scapy":
        from .scapy_source import ScapySource

        return ScapySource(interface, bpf=bpf)
    if backend != "af_packet":
        raise CaptureSetupError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    from .ring import RingSource

    return RingSource(interface, bpf=bpf, ring_bytes=ring_bytes)


def warm_up(compiled_rules: CompiledRules, options: Options) -> None:
    """Load every compiled kernel a live capture uses (from numba's cache when it has
    them) while the files of the cache are still writable, before dropping root."""
    from ..flows import place_flows
    from .ring import walk_block
    from .writer import pack_records

    # An Ethernet frame: IPv4, TCP 50000 -> 443.
    frame = bytes(12) + b"\x08\x00" + bytes.fromhex(
        "45000028000100004006000008080808c0a80001") + bytes.fromhex(
        "c35001bb00000000000000005010ffff00000000")
    buf = np.frombuffer(frame, np.uint8).copy()
    one = np.ones(1, np.int64)
    batch = Batch(buf, np.zeros(1, np.int64), one * len(frame), one * len(frame),
                  one * 1_000_000_000, one.copy(), 0)
    agg = Aggregator(compiled_rules, options, compiled=True)
    count_batch(batch, compiled_rules, agg, FragmentTable(compiled_rules.other))
    if agg.flow_table is not None:
        t = agg.flow_table
        place_flows.compiled(t.keys, t.count, t.slots)
    pack_records.compiled(buf, batch.offset, batch.caplen, batch.wirelen, batch.ts,
                          np.empty(16 + len(frame), np.uint8))
    ring = np.zeros(4096, np.uint8)
    cols = [np.empty(4, np.int64) for _ in range(4)]
    walk_block.compiled(ring, 0, False, np.empty(64, np.uint8), 0, *cols, 0)
