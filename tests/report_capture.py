"""A capture whose rates and concurrent streams are known by construction, for the
report tests: every stream sends a fixed number of fixed-size packets in each second
it is active, so each 1 s interval holds exactly known bytes and streams."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tests.writers import pcap

START = 1_700_000_000  # seconds since the epoch; any whole second
SECONDS = 20
INSIDE = "10.0.0.0/8"


@dataclass(frozen=True)
class Stream:
    """One bidirectional flow: ``pps`` packets a second each way while active."""

    category: str
    proto: int
    client: tuple[str, int]
    server: tuple[str, int]
    active: range  # the seconds it is active
    pps: int
    up_size: int  # wire bytes per packet, client to server
    down_size: int
    dscp: int


STREAMS = (
    Stream("audio", 17, ("10.0.0.1", 50000), ("52.112.0.10", 3478), range(0, 20), 50,
           200, 180, 46),
    Stream("audio", 17, ("10.0.0.2", 50001), ("52.112.0.10", 3478), range(5, 15), 50,
           200, 180, 46),
    Stream("video", 17, ("10.0.0.1", 50020), ("52.112.0.10", 3478), range(2, 12), 20,
           1000, 1200, 34),
    # Sharing without its DSCP marking: the QoS audit reports it.
    Stream("desktop-sharing", 6, ("10.0.0.3", 50040), ("52.112.0.11", 443), range(8, 13),
           10, 1400, 100, 0),
    Stream("https", 6, ("10.0.0.4", 40000), ("52.96.0.1", 443), range(0, 20), 20, 100, 1500,
           0),
)


def _ip(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def frame(s: Stream, up: bool) -> bytes:
    """An Ethernet/IPv4/UDP-or-TCP frame of exactly the stream's wire size."""
    size = s.up_size if up else s.down_size
    (src, sport), (dst, dport) = (s.client, s.server) if up else (s.server, s.client)
    l4_len = 8 if s.proto == 17 else 20
    ip_len = size - 14
    payload = b"\0" * (ip_len - 20 - l4_len)
    if s.proto == 17:
        l4 = struct.pack("!HHHH", sport, dport, l4_len + len(payload), 0)
    else:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, 0x18, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, s.dscp << 2, ip_len, 0, 0, 64, s.proto, 0,
                     _ip(src), _ip(dst))
    eth = b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00"
    return eth + ip + l4 + payload


def records(streams: tuple[Stream, ...] = STREAMS) -> list[tuple[int, bytes, int]]:
    out = []
    for s in streams:
        for second in s.active:
            for k in range(s.pps):
                ts = (START + second) * 1_000_000_000 + k * (1_000_000_000 // s.pps)
                for up in (True, False):
                    data = frame(s, up)
                    out.append((ts + (0 if up else 1_000), data, len(data)))
    out.sort(key=lambda r: r[0])
    return out


def capture(streams: tuple[Stream, ...] = STREAMS) -> bytes:
    return pcap(records(streams))


def per_second(category: str | None, up: bool) -> list[int]:
    """Wire bytes in each second of the capture, one direction, one category (None:
    every category)."""
    out = [0] * SECONDS
    for s in STREAMS:
        if category is not None and s.category != category:
            continue
        for second in s.active:
            out[second] += s.pps * (s.up_size if up else s.down_size)
    return out


def active(category: str) -> list[int]:
    """Streams of ``category`` active in each second."""
    return [sum(1 for s in STREAMS if s.category == category and sec in s.active)
            for sec in range(SECONDS)]
