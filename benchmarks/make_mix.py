#!/usr/bin/env python3
"""Write a synthetic but realistic Office 365 traffic mix as a pcap file, fast.

The mix is built column-wise with numpy (one array per header field, one element per
packet) and written record by record in large chunks: no per-packet Python, so two
million packets (about 1.4 GB) take seconds, not minutes.

What is in it (shares of packets, default options):

* audio (~25 %): RTP streams at 50 packets/s each, 60-220 byte frames, UDP client ports
  50000-50019 to a relay's 3478 or to 50000-59999, some over TCP 443; DSCP 46.
* video (~17 %) and desktop sharing (~5 %): streams with frames up to the MTU, UDP and
  TCP; desktop sharing over UDP goes to 3478, which the 2015 table does not list for
  sharing, so those packets are ``other`` under the default rules.
* web (TCP 443 and 80) and mail (25, 587, 993, 143, 995): bursty TCP flows with a
  handshake, bulk data at the MTU in one direction and small ACKs in the other.
* push (TCP 5223), DNS (UDP 53), QUIC (UDP 443), NTP, ICMP/ICMPv6 echo.
* IPv4 fragments: large UDP datagrams (video to 3478, DNS answers) cut into a first
  fragment carrying the UDP header and non-first fragments without one; one datagram in
  ten arrives last fragment first.
* ARP (no IP layer).
* About 11 % of the hosts sit on an 802.1Q VLAN and about 18 % of the flows use IPv6.

With ``--snaplen 96`` every record holds only the first 96 bytes of its frame (enough
for Ethernet + VLAN + IPv6 + TCP headers) while ``orig_len`` stays the wire length: a
headers-only capture of exactly the same traffic.

Usage::

    python benchmarks/make_mix.py --packets 2000000 -o /tmp/bench/mix-2m.pcap
    python benchmarks/make_mix.py --packets 2000000 --snaplen 96 -o /tmp/bench/mix-2m-96.pcap

The same ``--seed`` and ``--packets`` always give the same packets, whatever the snaplen.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["CATEGORY_SHARES", "build_mix", "main", "write_pcap"]

#: 2024-03-05 09:00:00 UTC, the capture's first second.
EPOCH = 1_709_629_200
MTU = 1500
LINKTYPE_ETHERNET = 1
N_CLIENTS = 2000
#: Packets per chunk written at once (bounds the writer's memory to a few hundred MB).
CHUNK = 131_072

#: Share of packets per kind of traffic; https takes what is left.
CATEGORY_SHARES: dict[str, float] = {
    "audio": 0.25,
    "video": 0.17,
    "desktop-sharing": 0.05,
    "https": 0.0,  # the remainder, about 0.345
    "http": 0.03,
    "push": 0.01,
    "smtp": 0.012,
    "smtp-relay": 0.01,
    "imap": 0.016,
    "pop3s": 0.01,
    "dns": 0.025,
    "quic": 0.05,
    "fragments": 0.012,
    "icmp": 0.003,
    "ntp": 0.002,
    "arp": 0.005,
}

Cols = dict[str, np.ndarray]

# Column names and dtypes of the packet table.
COLUMNS: dict[str, type] = {
    "t": np.float64,  # seconds from the start
    "pay": np.int32,  # payload bytes after the L4 header (-1: fill to the MTU)
    "vlan": np.bool_,
    "vid": np.uint16,
    "ver": np.uint8,  # 0 ARP, 4 IPv4, 6 IPv6
    "proto": np.uint8,  # 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6
    "l4": np.bool_,  # the L4 header is in this packet (False: non-first fragment)
    "c2s": np.bool_,  # client to server
    "cli": np.uint32,  # client host number
    "sip4": np.uint32,
    "sip6hi": np.uint64,
    "sip6lo": np.uint64,
    "cport": np.uint16,
    "sport": np.uint16,
    "flags": np.uint8,  # TCP flags, ICMP type, ARP opcode
    "seq": np.uint32,
    "ack": np.uint32,
    "ipid": np.uint16,
    "frag": np.uint16,  # IPv4 flags + fragment offset (in 8-byte units)
    "udplen": np.int32,  # UDP length field (-1: from the packet)
    "tos": np.uint8,
}

CLIENT4_BASE = (10 << 24) | (20 << 16)  # 10.20.0.0/16
CLIENT6_HI = 0x20010DB800100000  # 2001:db8:10::/64
GATEWAY4 = CLIENT4_BASE | 1
DNS4 = CLIENT4_BASE | (255 << 8) | 53
NTP4 = CLIENT4_BASE | (255 << 8) | 123
GATEWAY_MAC = bytes.fromhex("001da1c0ffee")

# Server address pools: (IPv4 base, IPv6 /64 prefix).
MEDIA = (0x34700000, 0x2603106300000000)  # 52.112.0.0/14, 2603:1063::/38
EXCHANGE = (0x28600000, 0x2603102600000000)  # 40.96.0.0/13, 2603:1026::
SHAREPOINT = (0x0D6B8800, 0x2620001C00000000)  # 13.107.136.0/22, 2620:1ec::
WEB = (0x0D6B0600, 0x2620001C00060000)  # 13.107.6.0/24
PUSH = (0x0D6B4000, 0x2603103700000000)  # 13.107.64.0/18


def _ip4(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def _table(n: int) -> Cols:
    cols: Cols = {name: np.zeros(n, dtype) for name, dtype in COLUMNS.items()}
    cols["udplen"][:] = -1
    cols["l4"][:] = True
    cols["ver"][:] = 4
    cols["c2s"][:] = True
    return cols


def _concat(parts: list[Cols]) -> Cols:
    return {name: np.concatenate([p[name] for p in parts]) for name in COLUMNS}


def _hosts(rng: np.random.Generator, cols: Cols, per_flow: np.ndarray, n_flows: int,
           pool: tuple[int, int], v6_share: float = 0.18) -> None:
    """Client, server, VLAN and IP version of each packet, chosen per flow."""
    cli = rng.integers(2, N_CLIENTS, n_flows).astype(np.uint32)
    cols["cli"][:] = cli[per_flow]
    cols["sip4"][:] = (pool[0] + rng.integers(1, 1024, n_flows)).astype(np.uint32)[per_flow]
    cols["sip6hi"][:] = np.uint64(pool[1])
    cols["sip6lo"][:] = rng.integers(1, 1 << 16, n_flows).astype(np.uint64)[per_flow]
    v6 = rng.random(n_flows) < v6_share
    cols["ver"][:] = np.where(v6, 6, 4).astype(np.uint8)[per_flow]
    _vlan(cols)


def _vlan(cols: Cols) -> None:
    """Hosts whose number is a multiple of 9 sit on one of three tagged VLANs."""
    cli = cols["cli"]
    cols["vlan"][:] = cli % 9 == 0
    cols["vid"][:] = (100 + (cli // 9) % 3 * 10).astype(np.uint16)


def _media(rng: np.random.Generator, n: int, duration: float, pps: float,
           client_ports: tuple[int, int], tos: int, pay: Callable[[int], np.ndarray],
           transports: list[tuple[float, int, tuple[int, int]]]) -> Cols:
    """Real-time streams: each call leg is a pair of streams (one per direction) sending
    ``pps`` packets a second for the whole capture.

    ``transports`` lists (weight, protocol, server port range) choices per call leg."""
    cols = _table(n)
    if n == 0:
        return cols
    streams = max(2, round(n / (pps * duration)) // 2 * 2)
    i = np.arange(n)
    s = i % streams
    j = i // streams
    legs = streams // 2
    leg = s // 2
    phase = rng.random(streams) / pps
    # Jitter below half the packet interval keeps each stream in order.
    jitter = np.clip(rng.normal(0.0, 0.15 / pps, n), -0.45 / pps, 0.45 / pps)
    cols["t"][:] = np.maximum(phase[s] + j / pps + jitter, 0.0)
    cols["c2s"][:] = s % 2 == 0
    _hosts(rng, cols, leg, legs, MEDIA)
    cols["cport"][:] = rng.integers(client_ports[0], client_ports[1] + 1, legs)[leg]
    weights = np.array([w for w, _, _ in transports], dtype=float)
    choice = rng.choice(len(transports), legs, p=weights / weights.sum())
    proto = np.array([p for _, p, _ in transports], dtype=np.uint8)[choice]
    lo = np.array([r[0] for _, _, r in transports])[choice]
    hi = np.array([r[1] for _, _, r in transports])[choice]
    sport = lo + (rng.random(legs) * (hi - lo + 1)).astype(np.int64)
    cols["proto"][:] = proto[leg]
    cols["sport"][:] = sport[leg]
    cols["tos"][:] = tos
    cols["pay"][:] = pay(n)
    tcp = cols["proto"] == 6
    cols["flags"][:] = np.where(tcp, 0x18, 0)
    _tcp_numbers(rng, cols, leg, legs)
    cols["ipid"][:] = rng.integers(0, 1 << 16, n)
    return cols


def _flows(rng: np.random.Generator, n: int, duration: float, mean_len: float,
           mean_gap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Bursty flows: per packet its flow number, its index in the flow and its time."""
    n_flows = max(1, int(n / mean_len * 1.3) + 8)
    lengths = rng.geometric(1.0 / mean_len, n_flows)
    ends = np.cumsum(lengths)
    while ends[-1] < n:  # rare: too few packets drawn
        ends = np.concatenate([ends, ends[-1:] + n])
    i = np.arange(n)
    flow = np.searchsorted(ends, i, side="right")
    n_flows = int(flow[-1]) + 1 if n else 0
    starts = np.concatenate([[0], ends[:-1]])
    idx = i - starts[flow]
    gaps = rng.exponential(mean_gap, n)
    csum = np.cumsum(gaps)
    t0 = rng.random(n_flows) * duration * 0.98
    offset = csum - (csum - gaps)[starts[flow]]
    t = t0[flow] + offset
    return flow, idx, t, n_flows


def _grouped_cumsum_excl(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Sum of ``values`` over the earlier packets of the same group (groups contiguous)."""
    csum = np.cumsum(values) - values
    first = np.searchsorted(group, group, side="left")
    out: np.ndarray = csum - csum[first]
    return out


def _tcp_numbers(rng: np.random.Generator, cols: Cols, flow: np.ndarray, n_flows: int,
                 idx: np.ndarray | None = None) -> None:
    """Plausible sequence and acknowledgement numbers: each side's ISN plus the bytes it
    and its peer sent before (a flow's packets are in time order). With ``idx`` (the
    packet's index in its flow) packets 0 and 1 are the SYN and SYN/ACK."""
    order = np.lexsort((cols["t"], flow))
    f = flow[order]
    pay = np.where(cols["pay"] < 0, MTU - 40 - 20 * (cols["ver"] == 6), cols["pay"])[order]
    c2s = cols["c2s"][order]
    sent_c = _grouped_cumsum_excl(np.where(c2s, pay, 0).astype(np.int64), f)
    sent_s = _grouped_cumsum_excl(np.where(c2s, 0, pay).astype(np.int64), f)
    isn_c = rng.integers(0, 1 << 32, n_flows, dtype=np.uint64)[f]
    isn_s = rng.integers(0, 1 << 32, n_flows, dtype=np.uint64)[f]
    mine = np.where(c2s, isn_c + sent_c.astype(np.uint64), isn_s + sent_s.astype(np.uint64))
    peer = np.where(c2s, isn_s + sent_s.astype(np.uint64), isn_c + sent_c.astype(np.uint64))
    if idx is not None:
        i = idx[order]
        mine = mine + (i >= 2).astype(np.uint64)
        peer = np.where(i == 0, np.uint64(0), peer + np.uint64(1))
    seq = np.empty_like(mine)
    ack = np.empty_like(peer)
    seq[order] = mine
    ack[order] = peer
    tcp = cols["proto"] == 6
    cols["seq"][:] = np.where(tcp, seq & 0xFFFFFFFF, 0)
    cols["ack"][:] = np.where(tcp, ack & 0xFFFFFFFF, 0)


def _tcp_bulk(rng: np.random.Generator, n: int, duration: float, server_ports: list[int],
              pool: tuple[int, int], mean_len: float, mean_gap: float, down: float,
              full: float = 0.9) -> Cols:
    """TCP flows: handshake, then bulk data at the MTU mostly in one direction (``down``
    is the share of server-to-client packets) and ACKs or requests the other way."""
    cols = _table(n)
    if n == 0:
        return cols
    flow, idx, t, n_flows = _flows(rng, n, duration, mean_len, mean_gap)
    cols["t"][:] = t
    _hosts(rng, cols, flow, n_flows, pool)
    cols["proto"][:] = 6
    cols["cport"][:] = rng.integers(49152, 65536, n_flows)[flow]
    cols["sport"][:] = np.array(server_ports)[rng.integers(0, len(server_ports), n_flows)][flow]
    to_client = rng.random(n) < down
    # The bulk direction sends full segments (or a partial one), the other ACKs (empty)
    # or small requests.
    bulk = np.where(rng.random(n) < full, -1, rng.integers(100, 1400, n))
    small = np.where(rng.random(n) < 0.8, 0, rng.integers(120, 900, n))
    bulk_is_down = down >= 0.5
    c2s = ~to_client
    data_dir = to_client if bulk_is_down else c2s
    pay = np.where(data_dir, bulk, small)
    flags = np.where(pay == 0, 0x10, 0x18)
    # Three-way handshake at the start of every flow.
    c2s = np.where(idx == 0, True, np.where(idx == 1, False, np.where(idx == 2, True, c2s)))
    pay = np.where(idx < 3, 0, pay)
    flags = np.where(idx == 0, 0x02, np.where(idx == 1, 0x12, np.where(idx == 2, 0x10, flags)))
    cols["c2s"][:] = c2s
    cols["pay"][:] = pay
    cols["flags"][:] = flags
    cols["ipid"][:] = rng.integers(0, 1 << 16, n)
    _tcp_numbers(rng, cols, flow, n_flows, idx)
    return cols


def _udp_flows(rng: np.random.Generator, n: int, duration: float, server_port: int,
               pool: tuple[int, int] | None, server4: int | None, mean_len: float,
               mean_gap: float, pay_up: Callable[[int], np.ndarray],
               pay_down: Callable[[int], np.ndarray], client_ports: tuple[int, int],
               proto: int = 17) -> Cols:
    """Request/response UDP (or ICMP echo) flows: packets alternate direction."""
    cols = _table(n)
    if n == 0:
        return cols
    flow, idx, t, n_flows = _flows(rng, n, duration, mean_len, mean_gap)
    cols["t"][:] = t
    _hosts(rng, cols, flow, n_flows, pool or MEDIA)
    if server4 is not None:
        cols["sip4"][:] = server4
        cols["sip6hi"][:] = np.uint64(CLIENT6_HI)
        cols["sip6lo"][:] = np.uint64(server4 & 0xFFFF)
    cols["proto"][:] = proto
    if proto != 17:
        cols["proto"][:] = np.where(cols["ver"] == 6, 58, 1)
    cols["cport"][:] = rng.integers(client_ports[0], client_ports[1] + 1, n_flows)[flow]
    cols["sport"][:] = server_port
    c2s = idx % 2 == 0
    cols["c2s"][:] = c2s
    cols["pay"][:] = np.where(c2s, pay_up(n), pay_down(n))
    if proto != 17:
        # ICMP echo: type 8/0 (ICMPv6 128/129); the "ports" hold identifier and sequence.
        v6 = cols["ver"] == 6
        cols["flags"][:] = np.where(c2s, np.where(v6, 128, 8), np.where(v6, 129, 0))
        cols["sport"][:] = idx // 2
    cols["ipid"][:] = rng.integers(0, 1 << 16, n)
    return cols


def _fragments(rng: np.random.Generator, n: int, duration: float) -> Cols:
    """IPv4 datagrams larger than the MTU, cut into fragments of 1480 data bytes."""
    if n == 0:
        return _table(0)
    n_dgrams = max(1, n // 2)
    size = rng.integers(1600, 4300, n_dgrams)  # UDP payload bytes
    ip_payload = size + 8
    n_frag = (ip_payload + 1479) // 1480
    ends = np.cumsum(n_frag)
    keep = int(np.searchsorted(ends, n, side="left")) + 1
    size, ip_payload, n_frag = size[:keep], ip_payload[:keep], n_frag[:keep]
    total = int(n_frag.sum())
    d = np.repeat(np.arange(keep), n_frag)
    starts = np.concatenate([[0], np.cumsum(n_frag)[:-1]])
    k = np.arange(total) - starts[d]
    cols = _table(total)
    kind_video = rng.random(keep) < 0.7
    cols["cli"][:] = rng.integers(2, N_CLIENTS, keep).astype(np.uint32)[d]
    _vlan(cols)
    cols["ver"][:] = 4
    cols["proto"][:] = 17
    video_server = (MEDIA[0] + rng.integers(1, 1024, keep)).astype(np.uint32)
    cols["sip4"][:] = np.where(kind_video, video_server, DNS4)[d]
    cols["cport"][:] = np.where(kind_video, rng.integers(50020, 50040, keep),
                                rng.integers(1024, 65536, keep))[d]
    cols["sport"][:] = np.where(kind_video, 3478, 53)[d]
    cols["c2s"][:] = kind_video[d]
    cols["tos"][:] = np.where(kind_video, 34 << 2, 0)[d]
    ipid = rng.integers(0, 1 << 16, keep)
    cols["ipid"][:] = ipid[d]
    last = k == n_frag[d] - 1
    data = np.where(last, ip_payload[d] - k * 1480, 1480)
    cols["frag"][:] = (np.where(last, 0, 0x2000) | (k * 185)).astype(np.uint16)
    cols["l4"][:] = k == 0
    cols["pay"][:] = np.where(k == 0, data - 8, data)
    cols["udplen"][:] = np.where(k == 0, size[d] + 8, -1)
    # One datagram in ten is sent last fragment first (as Linux used to).
    t0 = rng.random(keep) * duration * 0.99
    reverse = rng.random(keep) < 0.1
    order = np.where(reverse[d], n_frag[d] - 1 - k, k)
    cols["t"][:] = t0[d] + order * 12e-6
    return cols


def _arp(rng: np.random.Generator, n: int, duration: float) -> Cols:
    cols = _table(n)
    cols["ver"][:] = 0
    cols["l4"][:] = False
    cols["t"][:] = rng.random(n) * duration
    cols["cli"][:] = rng.integers(2, N_CLIENTS, n)
    _vlan(cols)
    cols["sip4"][:] = GATEWAY4
    request = rng.random(n) < 0.7
    cols["c2s"][:] = request
    cols["flags"][:] = np.where(request, 1, 2)
    return cols


def _uniform(lo: int, hi: int, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
    def draw(n: int) -> np.ndarray:
        return np.asarray(rng.integers(lo, hi + 1, n))
    return draw


def build_mix(n_packets: int, seed: int = 2015, rate: float = 20_000.0) -> Cols:
    """The packet table of the mix, sorted by time (``n_packets`` rows)."""
    rng = np.random.default_rng(seed)
    duration = max(n_packets / rate, 1.0)
    counts = {k: int(v * n_packets) for k, v in CATEGORY_SHARES.items()}
    counts["https"] = n_packets - sum(counts.values())

    def audio_pay(n: int) -> np.ndarray:
        # RTP + SRTP tag + codec frame: 60-220 byte frames on IPv4.
        return np.clip(rng.normal(85, 32, n), 18, 178).astype(np.int32)

    def video_pay(n: int) -> np.ndarray:
        big = rng.random(n) < 0.7
        return np.where(big, rng.integers(1000, 1401, n), rng.integers(150, 1000, n))

    def sharing_pay(n: int) -> np.ndarray:
        big = rng.random(n) < 0.6
        return np.where(big, -1, rng.integers(80, 1200, n))

    media = [
        (0.55, 17, (3478, 3478)),
        (0.35, 17, (50000, 59999)),
        (0.10, 6, (443, 443)),
    ]
    parts = [
        _media(rng, counts["audio"], duration, 50, (50000, 50019), 46 << 2, audio_pay, media),
        _media(rng, counts["video"], duration, 220, (50020, 50039), 34 << 2, video_pay,
               [(0.55, 17, (3478, 3478)), (0.30, 17, (50000, 59999)), (0.15, 6, (443, 443))]),
        _media(rng, counts["desktop-sharing"], duration, 110, (50040, 50059), 18 << 2,
               sharing_pay,
               [(0.70, 6, (443, 443)), (0.10, 6, (50000, 59999)), (0.20, 17, (3478, 3478))]),
        _tcp_bulk(rng, counts["https"] * 6 // 10, duration, [443], EXCHANGE, 60, 4e-4, 0.6),
        _tcp_bulk(rng, counts["https"] - counts["https"] * 6 // 10, duration, [443],
                  SHAREPOINT, 90, 3e-4, 0.62),
        _tcp_bulk(rng, counts["http"], duration, [80], WEB, 30, 5e-4, 0.6),
        _tcp_bulk(rng, counts["push"], duration, [5223], PUSH, 6, 0.05, 0.5, full=0.0),
        _tcp_bulk(rng, counts["smtp"], duration, [25], EXCHANGE, 40, 6e-4, 0.35),
        _tcp_bulk(rng, counts["smtp-relay"], duration, [587], EXCHANGE, 30, 6e-4, 0.35),
        _tcp_bulk(rng, counts["imap"], duration, [993, 993, 993, 143], EXCHANGE, 80, 4e-4,
                  0.6),
        _tcp_bulk(rng, counts["pop3s"], duration, [995], EXCHANGE, 50, 4e-4, 0.6),
        _udp_flows(rng, counts["dns"], duration, 53, None, DNS4, 2, 0.02,
                   _uniform(28, 60, rng), _uniform(60, 300, rng), (1024, 65535)),
        _udp_flows(rng, counts["quic"], duration, 443, WEB, None, 40, 5e-4,
                   _uniform(25, 60, rng), _uniform(1000, 1350, rng), (49152, 65535)),
        _udp_flows(rng, counts["ntp"], duration, 123, None, NTP4, 2, 0.01,
                   _uniform(48, 48, rng), _uniform(48, 48, rng), (123, 123)),
        _udp_flows(rng, counts["icmp"], duration, 0, WEB, None, 8, 1.0,
                   _uniform(56, 56, rng), _uniform(56, 56, rng), (1, 65535), proto=1),
        _fragments(rng, counts["fragments"], duration),
        _arp(rng, counts["arp"], duration),
    ]
    cols = _concat(parts)
    order = np.argsort(cols["t"], kind="stable")[:n_packets]
    return {name: col[order] for name, col in cols.items()}


def _put16(mat: np.ndarray, col: int, values: np.ndarray) -> None:
    v = values.astype(np.uint32)
    mat[:, col] = v >> 8
    mat[:, col + 1] = v & 0xFF


def _put32(mat: np.ndarray, col: int, values: np.ndarray) -> None:
    v = values.astype(np.uint64)
    for k in range(4):
        mat[:, col + k] = (v >> np.uint64(24 - 8 * k)) & np.uint64(0xFF)


def _put64(mat: np.ndarray, col: int, values: np.ndarray) -> None:
    v = values.astype(np.uint64)
    for k in range(8):
        mat[:, col + k] = (v >> np.uint64(56 - 8 * k)) & np.uint64(0xFF)


def _frames(c: Cols) -> tuple[np.ndarray, np.ndarray]:
    """Header bytes of each packet (n x 80 matrix) and each frame's wire length."""
    n = len(c["t"])
    vlan = c["vlan"]
    ver = c["ver"]
    proto = c["proto"]
    elen = np.where(vlan, 18, 14)
    l3 = np.select([ver == 4, ver == 6], [20, 40], 28)
    l4 = np.where(~c["l4"] | (ver == 0), 0, np.where(proto == 6, 20, 8))
    pay = np.where(c["pay"] < 0, MTU - l3 - l4, c["pay"]).astype(np.int64)
    pay = np.where(ver == 0, 0, pay)
    iplen = l3 + l4 + pay
    frame = elen + iplen
    wire = np.maximum(frame, 60)

    c2s = c["c2s"]
    cli = c["cli"].astype(np.uint64)
    cmac = np.uint64(0x02005E000000) | cli
    gw = np.uint64(int.from_bytes(GATEWAY_MAC, "big"))
    broadcast = np.uint64(0xFFFFFFFFFFFF)
    arp_req = (ver == 0) & c2s
    dst_mac = np.where(arp_req, broadcast, np.where(c2s, gw, cmac))
    src_mac = np.where(c2s, cmac, gw)
    cip4 = (CLIENT4_BASE | (cli + np.uint64(256))).astype(np.uint64) & np.uint64(0xFFFFFFFF)
    sip4 = c["sip4"].astype(np.uint64)
    src4 = np.where(c2s, cip4, sip4)
    dst4 = np.where(c2s, sip4, cip4)

    h = np.zeros((n, 80), np.uint8)
    mac = np.zeros((n, 8), np.uint8)
    _put64(mac, 0, dst_mac)
    h[:, 0:6] = mac[:, 2:8]
    _put64(mac, 0, src_mac)
    h[:, 6:12] = mac[:, 2:8]
    ethertype = np.select([ver == 4, ver == 6], [0x0800, 0x86DD], 0x0806)

    m = np.zeros((n, 62), np.uint8)  # L3 header + L4 header (or ARP + padding)
    r4 = np.flatnonzero(ver == 4)
    r6 = np.flatnonzero(ver == 6)
    ra = np.flatnonzero(ver == 0)
    sport = np.where(c2s, c["cport"], c["sport"])
    dport = np.where(c2s, c["sport"], c["cport"])
    udplen = np.where(c["udplen"] < 0, l4 + pay, c["udplen"])

    if len(r4):
        m4 = np.zeros((len(r4), 40), np.uint8)
        tos = c["tos"][r4].astype(np.uint32)
        ipl = iplen[r4].astype(np.uint32)
        ipid = c["ipid"][r4].astype(np.uint32)
        frag = c["frag"][r4].astype(np.uint32)
        ttl = np.where(c2s[r4], 128, 112).astype(np.uint32)
        pr = proto[r4].astype(np.uint32)
        s4 = src4[r4].astype(np.uint32)
        d4 = dst4[r4].astype(np.uint32)
        m4[:, 0] = 0x45
        m4[:, 1] = tos
        _put16(m4, 2, ipl)
        _put16(m4, 4, ipid)
        _put16(m4, 6, frag)
        m4[:, 8] = ttl
        m4[:, 9] = pr
        total = (0x4500 | tos) + ipl + ipid + frag + ((ttl << 8) | pr)
        total = total + (s4 >> 16) + (s4 & 0xFFFF) + (d4 >> 16) + (d4 & 0xFFFF)
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        _put16(m4, 10, ~total & 0xFFFF)
        _put32(m4, 12, s4)
        _put32(m4, 16, d4)
        m4[:, 20:40] = _l4_bytes(c, r4, sport, dport, udplen)
        m[r4, :40] = m4
    if len(r6):
        m6 = np.zeros((len(r6), 60), np.uint8)
        tc = c["tos"][r6].astype(np.uint32)
        flow_label = ((c["cport"][r6].astype(np.uint32) * 2654435761) >> 12) & 0xFFFFF
        m6[:, 0] = 0x60 | (tc >> 4)
        m6[:, 1] = ((tc & 0xF) << 4) | (flow_label >> 16)
        _put16(m6, 2, flow_label & 0xFFFF)
        _put16(m6, 4, (iplen[r6] - 40).astype(np.uint32))
        m6[:, 6] = proto[r6]
        m6[:, 7] = np.where(c2s[r6], 64, 52)
        c6lo = cli[r6] + np.uint64(256)
        s6hi = c["sip6hi"][r6]
        s6lo = c["sip6lo"][r6]
        up = c2s[r6]
        _put64(m6, 8, np.where(up, np.uint64(CLIENT6_HI), s6hi))
        _put64(m6, 16, np.where(up, c6lo, s6lo))
        _put64(m6, 24, np.where(up, s6hi, np.uint64(CLIENT6_HI)))
        _put64(m6, 32, np.where(up, s6lo, c6lo))
        m6[:, 40:60] = _l4_bytes(c, r6, sport, dport, udplen)
        m[r6, :60] = m6
    if len(ra):
        ma = np.zeros((len(ra), 28), np.uint8)
        _put16(ma, 0, np.full(len(ra), 1))
        _put16(ma, 2, np.full(len(ra), 0x0800))
        ma[:, 4] = 6
        ma[:, 5] = 4
        _put16(ma, 6, c["flags"][ra])
        req = c2s[ra]
        sender_mac = np.where(req, cmac[ra], gw)
        target_mac = np.where(req, np.uint64(0), cmac[ra])
        sender_ip = np.where(req, cip4[ra], sip4[ra])
        target_ip = np.where(req, sip4[ra], cip4[ra])
        tmp = np.zeros((len(ra), 8), np.uint8)
        _put64(tmp, 0, sender_mac)
        ma[:, 8:14] = tmp[:, 2:8]
        _put32(ma, 14, sender_ip)
        _put64(tmp, 0, target_mac)
        ma[:, 18:24] = tmp[:, 2:8]
        _put32(ma, 24, target_ip)
        m[ra, :28] = ma

    plain = np.flatnonzero(~vlan)
    tagged = np.flatnonzero(vlan)
    et = np.zeros((n, 2), np.uint8)
    _put16(et, 0, ethertype)
    h[plain, 12:14] = et[plain]
    h[plain, 14:76] = m[plain]
    if len(tagged):
        h[tagged, 12] = 0x81
        h[tagged, 13] = 0x00
        tci = np.zeros((len(tagged), 2), np.uint8)
        _put16(tci, 0, c["vid"][tagged])
        h[tagged, 14:16] = tci
        h[tagged, 16:18] = et[tagged]
        h[tagged, 18:80] = m[tagged]
    # Bytes of each frame that come from the header matrix: headers, and for short frames
    # the zero padding up to 60 bytes.
    hlen = np.where(frame < 60, 60, elen + l3 + l4)
    hlen = np.where(ver == 0, wire, hlen)
    return h, np.stack([wire, np.minimum(hlen, 80)])


def _l4_bytes(c: Cols, rows: np.ndarray, sport: np.ndarray, dport: np.ndarray,
              udplen: np.ndarray) -> np.ndarray:
    out = np.zeros((len(rows), 20), np.uint8)
    proto = c["proto"][rows]
    tcp = proto == 6
    udp = proto == 17
    icmp = (proto == 1) | (proto == 58)
    _put16(out, 0, sport[rows])
    _put16(out, 2, dport[rows])
    _put32(out, 4, c["seq"][rows])
    _put32(out, 8, c["ack"][rows])
    out[:, 12] = 0x50
    out[:, 13] = c["flags"][rows]
    _put16(out, 14, np.where(c["c2s"][rows], 0x0201, 0x7FF0))
    ul = np.zeros((len(rows), 2), np.uint8)
    _put16(ul, 0, udplen[rows] & 0xFFFF)
    out[udp, 4:6] = ul[udp]
    out[udp, 6:20] = 0
    if icmp.any():
        ic = np.flatnonzero(icmp)
        echo = np.zeros((len(ic), 8), np.uint8)
        echo[:, 0] = c["flags"][rows][ic]
        _put16(echo, 4, c["cport"][rows][ic])
        _put16(echo, 6, c["sport"][rows][ic])
        out[ic, :8] = echo
        out[ic, 8:] = 0
    out[~(tcp | udp | icmp)] = 0
    return out


def write_pcap(cols: Cols, path: str | Path, snaplen: int = 65535, seed: int = 2015,
               progress: bool = False) -> tuple[int, int, int]:
    """Write the packet table as a little-endian microsecond pcap (Ethernet).

    Returns (packets, wire bytes, file bytes)."""
    if snaplen < 1:
        raise ValueError("snaplen must be positive")
    n = len(cols["t"])
    rng = np.random.default_rng(seed + 1)
    filler = rng.integers(0, 256, 1 << 20, dtype=np.uint8)  # payload bytes (look encrypted)
    t_us = np.round(cols["t"] * 1e6).astype(np.int64) + EPOCH * 1_000_000
    t_us = np.maximum.accumulate(t_us)
    wire_total = 0
    file_total = 24
    header = np.array([0xA1B2C3D4], "<u4").tobytes() + np.array([2, 4], "<u2").tobytes()
    header += np.array([0, 0, snaplen, LINKTYPE_ETHERNET], "<u4").tobytes()
    cols_j = np.arange(80)
    with open(path, "wb") as f:
        f.write(header)
        for a in range(0, n, CHUNK):
            b = min(n, a + CHUNK)
            chunk = {k: v[a:b] for k, v in cols.items()}
            h, (wire, hlen) = _frames(chunk)
            incl = np.minimum(wire, snaplen)
            rec = 16 + incl
            off = np.concatenate([[0], np.cumsum(rec)[:-1]])
            size = int(rec.sum())
            buf = np.empty(size, np.uint8)
            for s in range(0, size, len(filler)):
                e = min(size, s + len(filler))
                buf[s:e] = filler[: e - s]
            rh = np.empty((b - a, 4), "<u4")
            rh[:, 0] = t_us[a:b] // 1_000_000
            rh[:, 1] = t_us[a:b] % 1_000_000
            rh[:, 2] = incl
            rh[:, 3] = wire
            idx = off[:, None] + np.arange(16)
            buf[idx] = rh.view(np.uint8).reshape(-1, 16)
            limit = np.minimum(hlen, incl)
            mask = cols_j[None, :] < limit[:, None]
            pos = (off + 16)[:, None] + cols_j[None, :]
            buf[pos[mask]] = h[mask]
            f.write(buf.data)
            wire_total += int(wire.sum())
            file_total += size
            if progress:
                print(f"\r{b:,}/{n:,} packets", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return n, wire_total, file_total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=2_000_000, help="packets to write")
    parser.add_argument("--snaplen", type=int, default=65535,
                        help="bytes of each frame to keep (96: headers-only)")
    parser.add_argument("--seed", type=int, default=2015, help="random seed")
    parser.add_argument("--rate", type=float, default=20_000.0,
                        help="average packets per second of the capture's timestamps")
    parser.add_argument("-o", "--output", required=True, help="pcap file to write")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.packets < 1:
        parser.error("--packets must be at least 1")
    if not 1 <= args.snaplen <= 262144:
        parser.error("--snaplen must be 1-262144")
    start = time.perf_counter()
    cols = build_mix(args.packets, args.seed, args.rate)
    built = time.perf_counter()
    n, wire, size = write_pcap(cols, args.output, args.snaplen, args.seed,
                               progress=not args.quiet and sys.stderr.isatty())
    done = time.perf_counter()
    if not args.quiet:
        print(f"{args.output}: {n:,} packets, {wire:,} wire bytes (average {wire / n:.0f}), "
              f"{size:,} file bytes, snaplen {args.snaplen}; "
              f"built in {built - start:.1f} s, written in {done - built:.1f} s",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
