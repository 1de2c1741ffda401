#!/usr/bin/env python3
"""Write the sample captures in ``pcaps/`` and the counts each must produce.

    python pcaps/make_samples.py            # rewrite pcaps/*.pcap* and pcaps/expected.json
    python pcaps/make_samples.py --out DIR  # write them somewhere else

Every packet is built here, one at a time, and the category it must count as is decided
when it is built: ``RuleSet.classify_one(protocol, port_a, port_b)`` of the default rule
set (``rules/office365-2015.toml``) for a packet that carries its ports, ``non-ip`` for a
frame without an IP layer, the datagram's category for a non-first IP fragment, ``other``
for a packet whose ports are not in the capture. ``expected.json`` is the tally of those
decisions (packets and wire lengths per category, anomalies by kind); it is never
computed by reading the captures back.

Packets are made with scapy; the file formats (pcap in both byte orders and both
timestamp resolutions, pcapng, gzip) and a few link-layer headers whose byte order
depends on the file are written with ``struct``. Timestamps and seeds are fixed, so two
runs write byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import random
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scapy.contrib.mpls import MPLS
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
    RouterAlert,
)
from scapy.layers.l2 import ARP, LLC, STP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE, PPPoED
from scapy.layers.sctp import SCTP, SCTPChunkData
from scapy.packet import Packet, Raw

if TYPE_CHECKING:
    from classifier.rules import RuleSet

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# 2015-04-06 09:30:00 UTC, the date of the port table the default rules restate.
EPOCH_US = 1_428_312_600 * 1_000_000

SNAPLEN = 262_144
ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP = 0, 1, 101, 108
LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2 = 113, 276
LINKTYPE_USER0, LINKTYPE_IPV4, LINKTYPE_IPV6 = 147, 228, 229

ANOMALY_PORTS_CUT = "ports-not-captured"
ANOMALY_IP_CUT = "ip-header-cut"
ANOMALY_UNKNOWN_LINK = "unknown-link-type"
ANOMALY_ORPHAN_FRAGMENT = "fragment-without-first"

# The capturing host, its gateway and a few Office 365 addresses (2015-era ranges).
HOST_MAC, GATEWAY_MAC, BROADCAST_MAC = "00:15:5d:1e:30:41", "00:0c:29:7a:10:01", "ff:ff:ff:ff:ff:ff"
HOST4, PEER4, GATEWAY4, MAILHOST4 = "10.20.30.41", "10.20.30.57", "10.20.30.1", "10.20.30.25"
HOST6, GATEWAY6 = "2001:db8:20:30::41", "2001:db8:20:30::1"
RELAY4, RELAY6 = "52.112.64.17", "2603:1063:2:1::17"  # media relay (UDP 3478)
LYNC4 = "52.112.193.16"  # sipdir / webdir / conferencing, TCP 443
OUTLOOK4, OUTLOOK6 = "52.96.88.162", "2603:1036:304:808::2"
SHAREPOINT4 = "13.107.136.9"
CDN4 = "13.107.4.50"
PUSH4 = "17.57.146.52"  # push notification service, TCP 5223
MX4 = "104.47.58.138"  # mail routing, TCP 25
SMTP4 = "52.97.146.130"  # smtp.office365.com, TCP 587
MAIL4 = "40.99.10.34"  # IMAP 143/993, POP3S 995
DSCP_AUDIO, DSCP_VIDEO, DSCP_SHARING = 46 << 2, 34 << 2, 18 << 2


@cache
def rules() -> RuleSet:
    """The default rule set, loaded straight from ``classifier/rules.py``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    module = importlib.import_module("classifier.rules")
    ruleset: RuleSet = module.load_rules(ROOT / "rules" / "office365-2015.toml")
    return ruleset


def classify(protocol: int | None, port_a: int | None = None, port_b: int | None = None) -> str:
    return rules().classify_one(protocol, port_a, port_b)


# --------------------------------------------------------------------------------------
# Packets


@dataclass(frozen=True)
class Pkt:
    """One packet from the network layer up, and what it must count as."""

    l3: bytes  # the IP header onwards, or the payload of a non-IP frame
    ethertype: int
    category: str
    inbound: bool = False  # received by the capturing host (short Ethernet frames padded)
    anomaly: str | None = None
    dst_mac: str | None = None  # for an outbound frame not sent to the gateway


@dataclass(frozen=True)
class Record:
    """One capture record: the bytes captured and the length on the wire."""

    ts_us: int
    data: bytes
    wire_len: int
    category: str
    anomaly: str | None = None


Timed = tuple[int, Pkt]  # (microseconds from the start of the sample, packet)


def is_v6(address: str) -> bool:
    return ":" in address


def ip_header(src: str, dst: str, *, tos: int = 0, ident: int = 0) -> Packet:
    if is_v6(src):
        return IPv6(src=src, dst=dst, tc=tos, hlim=64)
    return IP(src=src, dst=dst, tos=tos, id=ident, flags="DF", ttl=64)


def transport(
    proto: int, sport: int, dport: int, payload: bytes, flags: str = "A", seq: int = 0, ack: int = 0
) -> Packet:
    if proto == 6:
        return TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=64240) / Raw(
            payload
        )
    return UDP(sport=sport, dport=dport) / Raw(payload)


def ip_packet(
    src: str,
    dst: str,
    proto: int,
    sport: int,
    dport: int,
    payload: bytes = b"",
    *,
    inbound: bool = False,
    flags: str = "A",
    seq: int = 0,
    ack: int = 0,
    tos: int = 0,
    ident: int = 0,
    options: Sequence[Packet] = (),
    ext: Sequence[Packet] = (),
) -> Pkt:
    """A TCP or UDP packet; its category comes from the rules and its ports."""
    header = ip_header(src, dst, tos=tos, ident=ident)
    if options:
        header.options = list(options)
    for layer in ext:
        header = header / layer.copy()
    raw = bytes(header / transport(proto, sport, dport, payload, flags, seq, ack))
    ethertype = ETH_IPV6 if is_v6(src) else ETH_IPV4
    return Pkt(raw, ethertype, classify(proto, sport, dport), inbound)


def other_ip(src: str, dst: str, upper: Packet, *, inbound: bool = False, ident: int = 0) -> Pkt:
    """An IP packet of a protocol without ports (ICMP, ESP, ...): ``other``."""
    raw = bytes(ip_header(src, dst, ident=ident) / upper)
    proto = IPv6(raw).nh if is_v6(src) else IP(raw).proto
    return Pkt(raw, ETH_IPV6 if is_v6(src) else ETH_IPV4, classify(proto), inbound)


def arp(request: bool, *, inbound: bool) -> Pkt:
    if request:
        layer = ARP(op=1, hwsrc=HOST_MAC, psrc=HOST4, hwdst="00:00:00:00:00:00", pdst=GATEWAY4)
    else:
        layer = ARP(op=2, hwsrc=GATEWAY_MAC, psrc=GATEWAY4, hwdst=HOST_MAC, pdst=HOST4)
    return Pkt(
        bytes(layer),
        ETH_ARP,
        classify(None),
        inbound,
        dst_mac=None if inbound or not request else BROADCAST_MAC,
    )


def stp_bpdu() -> Pkt:
    """A spanning-tree configuration BPDU: 802.3 length field, LLC, no IP."""
    bpdu = bytes(
        LLC(dsap=0x42, ssap=0x42, ctrl=3)
        / STP(
            rootid=32768, rootmac=GATEWAY_MAC, bridgeid=32768, bridgemac=GATEWAY_MAC, portid=0x8001
        )
    )
    return Pkt(bpdu, len(bpdu), classify(None), inbound=True, dst_mac="01:80:c2:00:00:00")


def lldp() -> Pkt:
    """An LLDP frame (EtherType 0x88CC): chassis, port, TTL and end TLVs."""

    def tlv(kind: int, value: bytes) -> bytes:
        return struct.pack("!H", kind << 9 | len(value)) + value

    mac = bytes.fromhex(HOST_MAC.replace(":", ""))
    body = tlv(1, b"\x04" + mac) + tlv(2, b"\x03" + mac) + tlv(3, b"\x00\x78") + tlv(0, b"")
    return Pkt(body, 0x88CC, classify(None), dst_mac="01:80:c2:00:00:0e")


def ipv4_fragments(
    src: str,
    dst: str,
    proto: int,
    sport: int,
    dport: int,
    payload: bytes,
    *,
    ident: int,
    chunk: int,
    tos: int = 0,
    inbound: bool = False,
) -> list[Pkt]:
    """A TCP/UDP datagram cut into IPv4 fragments of ``chunk`` bytes, in order. Only the
    first carries the ports; every fragment counts in the datagram's category."""
    assert chunk % 8 == 0
    whole = bytes(IP(src=src, dst=dst, id=ident, tos=tos) / transport(proto, sport, dport, payload))
    body = whole[20:]
    category = classify(proto, sport, dport)
    out = []
    for offset in range(0, len(body), chunk):
        more = offset + chunk < len(body)
        header = IP(
            src=src,
            dst=dst,
            id=ident,
            tos=tos,
            proto=proto,
            flags="MF" if more else 0,
            frag=offset // 8,
        )
        out.append(
            Pkt(bytes(header / Raw(body[offset : offset + chunk])), ETH_IPV4, category, inbound)
        )
    return out


def ipv6_fragments(
    src: str,
    dst: str,
    proto: int,
    sport: int,
    dport: int,
    payload: bytes,
    *,
    ident: int,
    chunk: int,
    tos: int = 0,
    ext: Sequence[Packet] = (),
    after: Sequence[Packet] = (),
    inbound: bool = False,
) -> list[Pkt]:
    """A TCP/UDP datagram cut into IPv6 fragments. ``ext`` are the extension headers
    before the fragment header (in every fragment), ``after`` those after it (in the
    first fragment only, with the transport header)."""
    assert chunk % 8 == 0
    whole = IPv6(src=src, dst=dst)
    for layer in after:
        whole = whole / layer.copy()
    raw = bytes(whole / transport(proto, sport, dport, payload))
    first_header, body = raw[6], raw[40:]
    category = classify(proto, sport, dport)
    out = []
    for offset in range(0, len(body), chunk):
        more = offset + chunk < len(body)
        header = IPv6(src=src, dst=dst, tc=tos, hlim=64)
        for layer in ext:
            header = header / layer.copy()
        frag = IPv6ExtHdrFragment(nh=first_header, offset=offset // 8, m=int(more), id=ident)
        raw = bytes(header / frag / Raw(body[offset : offset + chunk]))
        out.append(Pkt(raw, ETH_IPV6, category, inbound))
    return out


def orphan(fragment: Pkt, proto: int) -> Pkt:
    """A non-first fragment whose first fragment is not in the capture: its ports are
    unknown, so it is ``other``."""
    return replace(fragment, category=classify(proto), anomaly=ANOMALY_ORPHAN_FRAGMENT)


def rtp(rng: random.Random, payload_type: int, seq: int, size: int, ssrc: int) -> bytes:
    header = struct.pack("!BBHII", 0x80, payload_type, seq & 0xFFFF, seq * 960, ssrc)
    return header + rng.randbytes(max(0, size - len(header)))


def tls(rng: random.Random, size: int) -> bytes:
    """Application data that looks like a TLS 1.2 record."""
    return struct.pack("!BHH", 0x17, 0x0303, max(0, size - 5)) + rng.randbytes(max(0, size - 5))


# --------------------------------------------------------------------------------------
# Conversations


def udp_stream(
    rng: random.Random,
    t0: int,
    client: str,
    server: str,
    cport: int,
    sport: int,
    *,
    count: int,
    sizes: tuple[int, int],
    interval: int = 20_000,
    tos: int = 0,
    payload_type: int = 111,
    replies: bool = True,
) -> list[Timed]:
    """An RTP-like stream from client to server, and the one coming back."""
    out: list[Timed] = []
    for i in range(count):
        t = t0 + i * interval + rng.randrange(0, 400)
        data = rtp(rng, payload_type, 1000 + i, rng.randint(*sizes), 0x5A0000 + cport)
        out.append(
            (t, ip_packet(client, server, 17, cport, sport, data, tos=tos, ident=0x2000 + i))
        )
        if replies:
            data = rtp(rng, payload_type, 7000 + i, rng.randint(*sizes), 0xA50000 + cport)
            out.append(
                (
                    t + 7_000 + rng.randrange(0, 900),
                    ip_packet(
                        server,
                        client,
                        17,
                        sport,
                        cport,
                        data,
                        inbound=True,
                        tos=tos,
                        ident=0x6000 + i,
                    ),
                )
            )
    return out


def tcp_session(
    rng: random.Random,
    t0: int,
    client: str,
    server: str,
    cport: int,
    sport: int,
    exchanges: Sequence[tuple[bytes, bytes]],
    *,
    rtt: int = 24_000,
    mss: int = 1380,
    tos: int = 0,
) -> list[Timed]:
    """A whole TCP connection: handshake, request/response rounds, and close."""
    out: list[Timed] = []
    cseq, sseq = rng.getrandbits(32), rng.getrandbits(32)
    t = t0
    ident = rng.randrange(0x1000, 0xF000)

    def send(from_client: bool, flags: str, data: bytes = b"", delay: int = 0) -> None:
        nonlocal ident
        ident += 1
        if from_client:
            pkt = ip_packet(
                client,
                server,
                6,
                cport,
                sport,
                data,
                flags=flags,
                seq=cseq,
                ack=sseq if "A" in flags else 0,
                tos=tos,
                ident=ident,
            )
        else:
            pkt = ip_packet(
                server,
                client,
                6,
                sport,
                cport,
                data,
                flags=flags,
                seq=sseq,
                ack=cseq,
                inbound=True,
                tos=tos,
                ident=ident,
            )
        out.append((t + delay, pkt))

    send(True, "S")
    cseq = (cseq + 1) % 2**32
    t += rtt // 2
    send(False, "SA")
    sseq = (sseq + 1) % 2**32
    t += rtt // 2
    send(True, "A")
    for request, response in exchanges:
        for i in range(0, len(request), mss):
            t += 150
            send(True, "PA", request[i : i + mss])
            cseq = (cseq + len(request[i : i + mss])) % 2**32
        if not request and response:  # the server speaks first (SMTP, IMAP banners)
            t -= rtt // 2
        t += rtt // 2
        for n, i in enumerate(range(0, len(response), mss)):
            t += 120
            send(False, "PA" if i + mss >= len(response) else "A", response[i : i + mss])
            sseq = (sseq + len(response[i : i + mss])) % 2**32
            if n % 2 == 1 or i + mss >= len(response):
                send(True, "A", delay=rtt // 2)
        t += rtt + rng.randrange(1_000, 30_000)
    send(True, "FA")
    cseq = (cseq + 1) % 2**32
    t += rtt // 2
    send(False, "FA")
    sseq = (sseq + 1) % 2**32
    t += rtt // 2
    send(True, "A")
    return out


def https_rounds(rng: random.Random, sizes: Iterable[tuple[int, int]]) -> list[tuple[bytes, bytes]]:
    return [(tls(rng, a), tls(rng, b)) for a, b in sizes]


def merge(*streams: Iterable[Timed]) -> list[Timed]:
    """All packets in time order (ties keep the order they were made in)."""
    items = [item for stream in streams for item in stream]
    order = sorted(range(len(items)), key=lambda i: (items[i][0], i))
    return [items[i] for i in order]


def dns_exchange(t0: int, ident: int, name: str, answer: str) -> list[Timed]:
    query = DNS(id=ident, rd=1, qd=DNSQR(qname=name, qtype="A"))
    response = DNS(
        id=ident,
        qr=1,
        rd=1,
        ra=1,
        qd=DNSQR(qname=name, qtype="A"),
        an=DNSRR(rrname=name, type="A", ttl=300, rdata=answer),
    )
    sport = 50_500 + ident % 1000  # resolver source ports are not Office 365 ports
    return [
        (t0, ip_packet(HOST4, GATEWAY4, 17, sport, 53, bytes(query), ident=ident)),
        (
            t0 + 2_100,
            ip_packet(
                GATEWAY4, HOST4, 17, 53, sport, bytes(response), inbound=True, ident=ident + 1
            ),
        ),
    ]


# --------------------------------------------------------------------------------------
# The Office 365 mix


def office365_mix() -> list[Timed]:
    rng = random.Random(2015)
    ms = 1_000
    parts: list[Iterable[Timed]] = []
    # Name resolution and the gateway's MAC first, as a client starting up would.
    parts.append([(0, arp(True, inbound=False)), (310, arp(False, inbound=True))])
    parts.append(dns_exchange(1 * ms, 0x3A11, "outlook.office365.com", OUTLOOK4))
    parts.append(dns_exchange(4 * ms, 0x3A12, "sipdir.online.lync.com", LYNC4))
    parts.append(dns_exchange(7 * ms, 0x3A13, "worldaz.tr.teams.microsoft.com", RELAY4))
    parts.append(
        [
            # NTP v4: client (mode 3) and server (mode 4).
            (
                9 * ms,
                ip_packet(HOST4, GATEWAY4, 17, 123, 123, b"\x23" + rng.randbytes(47), ident=0x0101),
            ),
            (
                11 * ms,
                ip_packet(
                    GATEWAY4,
                    HOST4,
                    17,
                    123,
                    123,
                    b"\x24\x02" + rng.randbytes(46),
                    inbound=True,
                    ident=0x0102,
                ),
            ),
        ]
    )
    parts.append(
        [
            (
                12 * ms,
                other_ip(
                    HOST4,
                    RELAY4,
                    ICMP(type=8, id=0x4F1, seq=1) / Raw(rng.randbytes(32)),
                    ident=0x0201,
                ),
            ),
            (
                38 * ms,
                other_ip(
                    RELAY4,
                    HOST4,
                    ICMP(type=0, id=0x4F1, seq=1) / Raw(rng.randbytes(32)),
                    inbound=True,
                    ident=0x0202,
                ),
            ),
        ]
    )
    # Mail, portal and SharePoint over TCP 443; SIP signalling to Lync Online.
    parts.append(
        tcp_session(
            rng,
            20 * ms,
            HOST4,
            OUTLOOK4,
            52100,
            443,
            https_rounds(rng, [(517, 2900), (420, 1400), (350, 650)]),
        )
    )
    parts.append(
        tcp_session(
            rng,
            60 * ms,
            HOST4,
            SHAREPOINT4,
            52101,
            443,
            https_rounds(rng, [(517, 2700), (610, 900)]),
        )
    )
    parts.append(
        tcp_session(
            rng, 90 * ms, HOST4, LYNC4, 52102, 443, https_rounds(rng, [(517, 1500), (900, 700)])
        )
    )
    parts.append(
        tcp_session(
            rng, 130 * ms, HOST6, OUTLOOK6, 52103, 443, https_rounds(rng, [(517, 2600), (300, 500)])
        )
    )
    # Plain HTTP download from the CDN.
    get = (
        b"GET /pr/492350f6-3a01-4f97-b9c0-c7c6ddf67d60/Office/Data/v32.cab HTTP/1.1\r\n"
        b"Host: officecdn.microsoft.com\r\nUser-Agent: Microsoft Office\r\n\r\n"
    )
    body = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"
    parts.append(
        tcp_session(rng, 150 * ms, HOST4, CDN4, 52104, 80, [(get, body + rng.randbytes(2700))])
    )
    # Push notifications, mail routing, SMTP relay, IMAP, POP3S.
    parts.append(
        tcp_session(rng, 170 * ms, HOST4, PUSH4, 52105, 5223, https_rounds(rng, [(300, 200)]))
    )
    parts.append(
        tcp_session(
            rng,
            200 * ms,
            MAILHOST4,
            MX4,
            52106,
            25,
            [
                (b"", b"220 mail.protection.outlook.com Microsoft ESMTP MAIL Service ready\r\n"),
                (
                    b"EHLO mail.contoso.com\r\n",
                    b"250-mail.protection.outlook.com Hello\r\n250 SIZE\r\n",
                ),
                (
                    b"MAIL FROM:<a@contoso.com>\r\nRCPT TO:<b@fabrikam.com>\r\nDATA\r\n",
                    b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 Start mail input\r\n",
                ),
                (
                    b"Subject: quarterly numbers\r\n\r\n" + rng.randbytes(900) + b"\r\n.\r\n",
                    b"250 2.6.0 Queued mail for delivery\r\n",
                ),
            ],
        )
    )
    parts.append(
        tcp_session(
            rng,
            230 * ms,
            MAILHOST4,
            SMTP4,
            52107,
            587,
            [
                (b"", b"220 smtp.office365.com Microsoft ESMTP MAIL Service ready\r\n"),
                (b"EHLO mail.contoso.com\r\n", b"250-smtp.office365.com Hello\r\n250 STARTTLS\r\n"),
                (b"STARTTLS\r\n", b"220 2.0.0 SMTP server ready\r\n"),
                (tls(rng, 517), tls(rng, 1900)),
            ],
        )
    )
    parts.append(
        tcp_session(
            rng,
            260 * ms,
            HOST4,
            MAIL4,
            52108,
            143,
            [
                (b"", b"* OK The Microsoft Exchange IMAP4 service is ready.\r\n"),
                (b"a1 CAPABILITY\r\n", b"* CAPABILITY IMAP4 IMAP4rev1 STARTTLS\r\na1 OK\r\n"),
                (b"a2 LOGOUT\r\n", b"* BYE\r\na2 OK LOGOUT completed.\r\n"),
            ],
        )
    )
    parts.append(
        tcp_session(
            rng, 280 * ms, HOST4, MAIL4, 52109, 993, https_rounds(rng, [(517, 1900), (120, 800)])
        )
    )
    parts.append(
        tcp_session(
            rng, 300 * ms, HOST4, MAIL4, 52110, 995, https_rounds(rng, [(517, 1900), (90, 400)])
        )
    )
    # A call: audio and video to the media relay, desktop sharing over TCP 443 and (not a
    # seed port) over UDP 3478, a peer-to-peer audio leg, and QUIC (UDP 443) web traffic.
    parts.append(
        udp_stream(
            rng, 400 * ms, HOST4, RELAY4, 50004, 3478, count=40, sizes=(90, 160), tos=DSCP_AUDIO
        )
    )
    parts.append(
        udp_stream(
            rng, 407 * ms, HOST4, PEER4, 50011, 51822, count=15, sizes=(90, 130), tos=DSCP_AUDIO
        )
    )
    parts.append(
        udp_stream(
            rng,
            403 * ms,
            HOST4,
            RELAY4,
            50023,
            3478,
            count=14,
            interval=33_000,
            sizes=(500, 900),
            tos=DSCP_VIDEO,
            payload_type=122,
        )
    )
    parts.append(
        tcp_session(
            rng,
            450 * ms,
            HOST4,
            LYNC4,
            50041,
            443,
            https_rounds(rng, [(517, 1200), (3000, 300), (2200, 200)]),
            tos=DSCP_SHARING,
        )
    )
    parts.append(
        udp_stream(
            rng,
            520 * ms,
            HOST4,
            RELAY4,
            50047,
            3478,
            count=5,
            interval=40_000,
            sizes=(300, 700),
            tos=DSCP_SHARING,
            payload_type=127,
        )
    )
    parts.append(
        udp_stream(
            rng,
            600 * ms,
            HOST4,
            SHAREPOINT4,
            52111,
            443,
            count=2,
            interval=15_000,
            sizes=(1200, 1250),
        )
    )
    # A fragmented audio datagram (IPv4, in order), a fragmented video datagram (IPv6
    # fragment header), an audio packet with IPv4 options, and another ARP exchange.
    frags4 = ipv4_fragments(
        HOST4, RELAY4, 17, 50004, 3478, rng.randbytes(1600), ident=0x7A01, chunk=552, tos=DSCP_AUDIO
    )
    parts.append((700 * ms + i * 40, p) for i, p in enumerate(frags4))
    frags6 = ipv6_fragments(
        HOST6,
        RELAY6,
        17,
        50025,
        3478,
        rng.randbytes(1800),
        ident=0x5EED0001,
        chunk=1232,
        tos=DSCP_VIDEO,
    )
    parts.append((705 * ms + i * 40, p) for i, p in enumerate(frags6))
    parts.append(
        [
            (
                710 * ms,
                ip_packet(
                    HOST4,
                    RELAY4,
                    17,
                    50004,
                    3478,
                    rng.randbytes(120),
                    tos=DSCP_AUDIO,
                    ident=0x7A02,
                    options=[IPOption_RR(routers=[GATEWAY4, "0.0.0.0"])],
                ),
            )
        ]
    )
    parts.append([(800 * ms, arp(True, inbound=False)), (800 * ms + 290, arp(False, inbound=True))])
    # Spanning tree and LLDP from the switch and the host: no IP layer.
    parts.append([(150 * ms, stp_bpdu()), (550 * ms, lldp()), (750 * ms, stp_bpdu())])
    return merge(*parts)


# --------------------------------------------------------------------------------------
# A short set of packets reused in the link-type samples


def core_packets(seed: int) -> list[Timed]:
    """One or two packets of every category, over IPv4 and IPv6."""
    rng = random.Random(seed)
    eph = 40_000 + (seed * 131 % 450) * 20  # client ports differ between samples

    def tcp(
        src: str,
        dst: str,
        sport: int,
        dport: int,
        payload: bytes,
        *,
        flags: str = "PA",
        inbound: bool = False,
        tos: int = 0,
    ) -> Pkt:
        return ip_packet(
            src,
            dst,
            6,
            sport,
            dport,
            payload,
            flags=flags,
            inbound=inbound,
            seq=rng.getrandbits(32),
            ack=rng.getrandbits(32),
            tos=tos,
        )

    items: list[Pkt] = [
        ip_packet(HOST4, RELAY4, 17, 50002, 3478, rtp(rng, 111, 1, 120, 1), tos=DSCP_AUDIO),
        ip_packet(RELAY4, HOST4, 17, 3478, 50002, rtp(rng, 111, 2, 110, 2), inbound=True),
        ip_packet(HOST4, RELAY4, 17, 50021, 3478, rtp(rng, 122, 3, 900, 3), tos=DSCP_VIDEO),
        tcp(HOST4, LYNC4, 50042, 443, tls(rng, 700), tos=DSCP_SHARING),
        ip_packet(HOST4, RELAY4, 17, 50042, 3478, rtp(rng, 127, 4, 500, 4)),  # other
        tcp(HOST4, PUSH4, eph, 5223, tls(rng, 90)),
        tcp(HOST4, OUTLOOK4, eph + 1, 443, tls(rng, 517)),
        tcp(OUTLOOK4, HOST4, 443, eph + 1, tls(rng, 1380), flags="A", inbound=True),
        tcp(HOST4, CDN4, eph + 2, 80, b"GET / HTTP/1.1\r\nHost: officecdn\r\n\r\n"),
        tcp(MAILHOST4, MX4, eph + 3, 25, b"EHLO mail.contoso.com\r\n"),
        tcp(MAILHOST4, SMTP4, eph + 4, 587, b"STARTTLS\r\n"),
        tcp(MAIL4, HOST4, 993, eph + 5, tls(rng, 300), inbound=True),
        tcp(HOST4, MAIL4, eph + 6, 995, tls(rng, 80)),
        ip_packet(
            HOST4,
            GATEWAY4,
            17,
            eph + 7,
            53,
            bytes(DNS(id=seed & 0xFFFF, rd=1, qd=DNSQR(qname="outlook.office365.com"))),
        ),
        tcp(HOST6, OUTLOOK6, eph + 8, 443, tls(rng, 517)),
        tcp(OUTLOOK6, HOST6, 443, eph + 8, tls(rng, 1200), flags="A", inbound=True),
        ip_packet(HOST6, RELAY6, 17, 50003, 3478, rtp(rng, 111, 5, 100, 5), tos=DSCP_AUDIO),
        ip_packet(RELAY6, HOST6, 17, 3478, 50030, rtp(rng, 122, 6, 800, 6), inbound=True),
        other_ip(HOST6, GATEWAY6, ICMPv6EchoRequest(id=7, seq=1, data=rng.randbytes(16))),
        other_ip(GATEWAY6, HOST6, ICMPv6EchoReply(id=7, seq=1, data=b"\x00" * 16), inbound=True),
        other_ip(HOST4, GATEWAY4, ICMP(type=8, id=9, seq=1) / Raw(rng.randbytes(24))),
    ]
    return [(i * 1_750 + rng.randrange(0, 500), p) for i, p in enumerate(items)]


# --------------------------------------------------------------------------------------
# Link layers


def _mac(inbound: bool) -> tuple[str, str]:
    """(source, destination) MAC of a frame in the given direction."""
    return (GATEWAY_MAC, HOST_MAC) if inbound else (HOST_MAC, GATEWAY_MAC)


def pad60(frame: bytes, inbound: bool) -> bytes:
    """Frames received from the wire are at least 60 bytes (without FCS)."""
    return frame + b"\x00" * (60 - len(frame)) if inbound and len(frame) < 60 else frame


def ethernet(pkt: Pkt, tags: Sequence[tuple[int, int]] = ()) -> bytes:
    """An Ethernet frame, with VLAN tags given as (tag protocol id, VLAN id) outermost first."""
    src, dst = _mac(pkt.inbound)
    dst = pkt.dst_mac or dst
    if not tags:
        return pad60(bytes(Ether(src=src, dst=dst, type=pkt.ethertype) / Raw(pkt.l3)), pkt.inbound)
    frame: Packet = Ether(src=src, dst=dst, type=tags[0][0])
    for n, (_, vlan) in enumerate(tags):
        inner = tags[n + 1][0] if n + 1 < len(tags) else pkt.ethertype
        tag_class = Dot1AD if tags[n][0] == 0x88A8 else Dot1Q
        frame = frame / tag_class(vlan=vlan, prio=0, type=inner)
    return pad60(bytes(frame / Raw(pkt.l3)), pkt.inbound)


def ethernet_fcs(pkt: Pkt) -> bytes:
    """An Ethernet frame as a network tap sees it: padded to 60 bytes, then the FCS."""
    frame = pad60(ethernet(pkt), True)
    return frame + struct.pack("<I", zlib.crc32(frame))


def link_start(pkt: Pkt, ethertype: int, vlan: int | None) -> Packet:
    """The Ethernet header (and an 802.1Q tag when ``vlan`` is given) before ``ethertype``."""
    src, dst = _mac(pkt.inbound)
    if vlan is None:
        return Ether(src=src, dst=dst, type=ethertype)
    return Ether(src=src, dst=dst, type=0x8100) / Dot1Q(vlan=vlan, prio=0, type=ethertype)


def mpls(
    pkt: Pkt, labels: Sequence[int], ethertype: int = 0x8847, vlan: int | None = None
) -> bytes:
    frame = link_start(pkt, ethertype, vlan)
    for n, label in enumerate(labels):
        frame = frame / MPLS(label=label, cos=0, s=int(n == len(labels) - 1), ttl=63)
    return pad60(bytes(frame / Raw(pkt.l3)), pkt.inbound)


def pppoe(pkt: Pkt, session: int = 0x1A2B, vlan: int | None = None) -> bytes:
    proto = {ETH_IPV4: 0x0021, ETH_IPV6: 0x0057}[pkt.ethertype]
    frame = link_start(pkt, 0x8864, vlan) / PPPoE(sessionid=session) / PPP(proto=proto)
    return pad60(bytes(frame / Raw(pkt.l3)), pkt.inbound)


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", "")) + b"\x00\x00"


def sll(pkt: Pkt) -> bytes:
    src = _mac(pkt.inbound)[0]
    header = CookedLinux(
        pkttype=0 if pkt.inbound else 4,
        lladdrtype=1,
        lladdrlen=6,
        src=_mac_bytes(src),
        proto=pkt.ethertype,
    )
    return bytes(header / Raw(pkt.l3))


def sll2(pkt: Pkt) -> bytes:
    src = _mac(pkt.inbound)[0]
    header = CookedLinuxV2(
        proto=pkt.ethertype,
        ifindex=2,
        lladdrtype=1,
        pkttype=0 if pkt.inbound else 4,
        lladdrlen=6,
        src=_mac_bytes(src),
    )
    return bytes(header / Raw(pkt.l3))


def loopback(pkt: Pkt, family: int, byte_order: str) -> bytes:
    return struct.pack(byte_order + "I", family) + pkt.l3


def records(items: Iterable[Timed], frame: Callable[[Pkt], bytes], start_us: int) -> list[Record]:
    """Whole-packet records (captured length = wire length)."""
    out = []
    for t, pkt in items:
        data = frame(pkt)
        out.append(Record(start_us + t, data, len(data), pkt.category, pkt.anomaly))
    return out


# --------------------------------------------------------------------------------------
# File formats


def pcap(
    recs: Sequence[Record],
    linktype: int,
    *,
    snaplen: int = SNAPLEN,
    nanoseconds: bool = False,
    big_endian: bool = False,
) -> bytes:
    bo = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    out = [struct.pack(bo + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for r in recs:
        sec, usec = divmod(r.ts_us, 1_000_000)
        out.append(
            struct.pack(
                bo + "IIII", sec, usec * 1000 if nanoseconds else usec, len(r.data), r.wire_len
            )
        )
        out.append(r.data)
    return b"".join(out)


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def ng_options(bo: str, options: Sequence[tuple[int, bytes]]) -> bytes:
    if not options:
        return b""
    body = b"".join(struct.pack(bo + "HH", code, len(v)) + _pad4(v) for code, v in options)
    return body + struct.pack(bo + "HH", 0, 0)


def ng_block(bo: str, block_type: int, body: bytes) -> bytes:
    body = _pad4(body)
    total = len(body) + 12
    return struct.pack(bo + "II", block_type, total) + body + struct.pack(bo + "I", total)


def ng_shb(bo: str, options: Sequence[tuple[int, bytes]] = ()) -> bytes:
    return ng_block(
        bo, 0x0A0D0D0A, struct.pack(bo + "IHHq", 0x1A2B3C4D, 1, 0, -1) + ng_options(bo, options)
    )


def ng_idb(bo: str, linktype: int, snaplen: int, options: Sequence[tuple[int, bytes]]) -> bytes:
    return ng_block(bo, 1, struct.pack(bo + "HHI", linktype, 0, snaplen) + ng_options(bo, options))


def ticks(ts_us: int, tsresol: int) -> int:
    """A timestamp in units of an interface's ``if_tsresol``."""
    per_second = 1 << (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol
    return ts_us * per_second // 1_000_000


def ng_epb(
    bo: str, interface: int, tsresol: int, r: Record, options: Sequence[tuple[int, bytes]] = ()
) -> bytes:
    ts = ticks(r.ts_us, tsresol)
    head = struct.pack(bo + "IIIII", interface, ts >> 32, ts & 0xFFFFFFFF, len(r.data), r.wire_len)
    return ng_block(bo, 6, head + _pad4(r.data) + ng_options(bo, options))


def ng_spb(bo: str, r: Record) -> bytes:
    return ng_block(bo, 3, struct.pack(bo + "I", r.wire_len) + _pad4(r.data))


def pcapng_single(recs: Sequence[Record], linktype: int, tsresol: int = 9) -> bytes:
    """SHB, one IDB with ``if_tsresol``, and an EPB per record."""
    bo = "<"
    out = [ng_shb(bo), ng_idb(bo, linktype, SNAPLEN, [(2, b"eth0"), (9, bytes([tsresol]))])]
    out += [ng_epb(bo, 0, tsresol, r) for r in recs]
    return b"".join(out)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


# --------------------------------------------------------------------------------------
# The samples


@dataclass
class Sample:
    data: bytes
    recs: list[Record]
    complete: bool = True
    exit: int = 0
    offset: int | None = None  # where the capture is damaged
    link_types: tuple[int, ...] = ()
    fmt: str | None = "pcap"  # None: not a capture


def tally(sample: Sample) -> dict[str, Any]:
    categories = {c: {"packets": 0, "bytes": 0} for c in rules().categories}
    anomalies: dict[str, int] = {}
    for r in sample.recs:
        categories[r.category]["packets"] += 1
        categories[r.category]["bytes"] += r.wire_len
        if r.anomaly:
            anomalies[r.anomaly] = anomalies.get(r.anomaly, 0) + 1
    out: dict[str, Any] = {
        "format": sample.fmt,
        "link_types": sorted(sample.link_types),
        "packets": len(sample.recs),
        "bytes": sum(r.wire_len for r in sample.recs),
        "categories": categories,
        "anomalies": dict(sorted(anomalies.items())),
        "complete": sample.complete,
        "exit": sample.exit,
    }
    if sample.offset is not None:
        out["offset"] = sample.offset
    return out


def start_of(n: int) -> int:
    """The start of the n-th sample, one minute apart, so that files differ in time."""
    return EPOCH_US + n * 60_000_000


def mix_samples() -> dict[str, Sample]:
    recs = records(office365_mix(), ethernet, EPOCH_US)
    plain = pcap(recs, LINKTYPE_ETHERNET)
    ng = pcapng_single(recs, LINKTYPE_ETHERNET)
    eth = (LINKTYPE_ETHERNET,)
    return {
        "office365-mix.pcap": Sample(plain, recs, link_types=eth),
        "office365-mix-ns.pcap": Sample(
            pcap(recs, LINKTYPE_ETHERNET, nanoseconds=True), recs, link_types=eth
        ),
        "office365-mix-be.pcap": Sample(
            pcap(recs, LINKTYPE_ETHERNET, big_endian=True), recs, link_types=eth
        ),
        "office365-mix.pcapng": Sample(ng, recs, link_types=eth, fmt="pcapng"),
        "office365-mix.pcap.gz": Sample(gz(plain), recs, link_types=eth),
        "office365-mix.pcapng.gz": Sample(gz(ng), recs, link_types=eth, fmt="pcapng"),
    }


def fcs_sample() -> Sample:
    """Frames with their 4-byte FCS; the link type field says so in its upper bits
    (FCS length 2 x 16 bits, flag bit 26), the low 16 bits are still 1 (Ethernet)."""
    items = [*core_packets(14), (45_000, arp(True, inbound=False)), (45_250, lldp())]
    recs = records(items, ethernet_fcs, start_of(19))
    linktype = (2 << 28) | (1 << 26) | LINKTYPE_ETHERNET
    return Sample(pcap(recs, linktype), recs, link_types=(LINKTYPE_ETHERNET,))


def vlan_sample() -> Sample:
    stacks: list[list[tuple[int, int]]] = [
        [(0x8100, 120)],
        [(0x88A8, 300), (0x8100, 120)],
        [(0x9100, 301), (0x8100, 121)],
        [(0x88A8, 302), (0x8100, 122), (0x8100, 7)],
    ]
    arps = [(40_000, arp(True, inbound=False)), (40_300, arp(False, inbound=True))]
    items = [*core_packets(11), *arps]
    recs = []
    for n, (t, p) in enumerate(items):
        data = ethernet(p, stacks[n % len(stacks)])
        recs.append(Record(start_of(1) + t, data, len(data), p.category))
    return Sample(pcap(recs, LINKTYPE_ETHERNET), recs, link_types=(LINKTYPE_ETHERNET,))


def mpls_sample() -> Sample:
    stacks = [[16], [100, 200, 3000], [524287], [17, 18, 19]]
    recs = []
    for n, (t, p) in enumerate(core_packets(12)):
        # Labels behind an 802.1Q tag on every third packet; 0x8848 (multicast) once.
        vlan = 200 if n % 3 == 2 else None
        data = mpls(p, stacks[n % len(stacks)], 0x8848 if n == 5 else 0x8847, vlan)
        recs.append(Record(start_of(2) + t, data, len(data), p.category))
    return Sample(pcap(recs, LINKTYPE_ETHERNET), recs, link_types=(LINKTYPE_ETHERNET,))


def pppoe_sample() -> Sample:
    recs = []
    start = start_of(3)
    # Discovery (EtherType 0x8863) and an LCP echo inside the session: no IP layer.
    padi = bytes(
        Ether(src=HOST_MAC, dst=BROADCAST_MAC, type=0x8863)
        / PPPoED(code=0x09, sessionid=0)
        / Raw(b"\x01\x01\x00\x00")
    )
    recs.append(Record(start, padi, len(padi), classify(None)))
    lcp = pad60(
        bytes(
            Ether(src=GATEWAY_MAC, dst=HOST_MAC, type=0x8864)
            / PPPoE(sessionid=0x1A2B)
            / PPP(proto=0xC021)
            / Raw(b"\x09\x01\x00\x08\x12\x34\x56\x78")
        ),
        True,
    )
    recs.append(Record(start + 500, lcp, len(lcp), classify(None)))
    for n, (t, p) in enumerate(core_packets(13)):
        # PPPoE behind an 802.1Q tag (VLAN 7, as many DSL lines) on every other packet.
        data = pppoe(p, vlan=7 if n % 2 else None)
        recs.append(Record(start + 1_000 + t, data, len(data), p.category))
    return Sample(pcap(recs, LINKTYPE_ETHERNET), recs, link_types=(LINKTYPE_ETHERNET,))


def cooked_sample(n: int, frame: Callable[[Pkt], bytes], linktype: int) -> Sample:
    arps = [(45_000, arp(True, inbound=False)), (45_250, arp(False, inbound=True))]
    items = [*core_packets(20 + n), *arps]
    recs = records(items, frame, start_of(n))
    return Sample(pcap(recs, linktype), recs, link_types=(linktype,))


def raw_sample(
    n: int, linktype: int, *, v4: bool = True, v6: bool = True, extra: Sequence[Timed] = ()
) -> Sample:
    items = [
        (t, p)
        for t, p in core_packets(30 + n)
        if (v4 and p.ethertype == ETH_IPV4) or (v6 and p.ethertype == ETH_IPV6)
    ]
    recs = records(merge(items, extra), lambda p: p.l3, start_of(n))
    return Sample(pcap(recs, linktype), recs, link_types=(linktype,))


def ipv4_extra() -> list[Timed]:
    """Port-range edges, IPv4 options, and fragments out of order, interleaved, orphaned."""
    rng = random.Random(228)

    def udp(sport: int, dport: int) -> Pkt:
        return ip_packet(HOST4, RELAY4, 17, sport, dport, rng.randbytes(60))

    def tcp(sport: int, dport: int) -> Pkt:
        return ip_packet(HOST4, LYNC4, 6, sport, dport, tls(rng, 60), flags="PA")

    edges = [
        udp(50019, 3478),
        udp(50020, 3478),
        udp(50039, 3478),
        udp(50040, 3478),
        udp(50005, 59999),
        udp(50005, 60000),
        udp(50010, 50030),
        udp(50030, 50010),
        udp(50030, 51000),
        udp(50045, 50100),
        udp(443, 50001),
        udp(50001, 443),
        tcp(50001, 443),
        tcp(443, 50001),
        tcp(50059, 443),
        tcp(50060, 443),
        tcp(50045, 50100),
        tcp(1023, 443),
        tcp(1024, 443),
        tcp(65535, 443),
        tcp(443, 443),
        tcp(50001, 5223),
        tcp(5223, 50001),
        tcp(49999, 80),
        tcp(49999, 25),
        tcp(49999, 587),
        tcp(49999, 143),
        tcp(143, 49999),
        tcp(49999, 993),
        tcp(49999, 995),
        tcp(995, 996),
    ]
    # Ports in the same place as TCP/UDP, but neither: SCTP to 443 and ESP.
    sctp = bytes(
        IP(src=HOST4, dst=LYNC4)
        / SCTP(sport=50001, dport=443, tag=0x1F2E3D4C)
        / SCTPChunkData(tsn=1, stream_id=0, proto_id=0, data=rng.randbytes(28))
    )
    esp = bytes(IP(src=HOST4, dst=LYNC4, proto=50) / Raw(rng.randbytes(64)))
    edges.append(Pkt(sctp, ETH_IPV4, classify(132, 50001, 443)))
    edges.append(Pkt(esp, ETH_IPV4, classify(50)))
    # Options: router alert (IHL 6), record route (IHL 8), and a full 40 bytes (IHL 15).
    edges.append(
        ip_packet(
            HOST4, RELAY4, 17, 50006, 3478, rng.randbytes(100), options=[IPOption_Router_Alert()]
        )
    )
    edges.append(
        ip_packet(
            HOST4,
            LYNC4,
            6,
            50025,
            443,
            tls(rng, 80),
            options=[IPOption_RR(routers=["0.0.0.0"] * 2)],
        )
    )
    edges.append(
        ip_packet(
            HOST4,
            OUTLOOK4,
            6,
            52000,
            993,
            tls(rng, 80),
            options=[IPOption_RR(routers=["0.0.0.0"] * 9)],
        )
    )
    out: list[Timed] = [(100_000 + i * 500, p) for i, p in enumerate(edges)]

    t = 200_000
    # Audio datagram sent last fragment first (as some stacks do).
    audio = ipv4_fragments(
        HOST4, RELAY4, 17, 50007, 3478, rng.randbytes(1400), ident=0x1001, chunk=496
    )
    for i, p in enumerate(reversed(audio)):
        out.append((t + i * 30, p))
    # Two datagrams with the same IP id from different sources, and one with the same
    # source, destination and id but another protocol, interleaved.
    t = 210_000
    a = ipv4_fragments(HOST4, RELAY4, 17, 50024, 3478, rng.randbytes(1100), ident=0x2222, chunk=504)
    b = ipv4_fragments(PEER4, RELAY4, 17, 50040, 3478, rng.randbytes(1100), ident=0x2222, chunk=504)
    c = ipv4_fragments(HOST4, RELAY4, 6, 52001, 443, tls(rng, 1100), ident=0x2222, chunk=504)
    d = ipv4_fragments(
        RELAY4, HOST4, 17, 3478, 50012, rng.randbytes(1100), ident=0x2222, chunk=504, inbound=True
    )
    for i, p in enumerate([a[0], b[0], c[0], d[0], c[1], a[1], d[1], b[1], a[2], b[2], c[2], d[2]]):
        out.append((t + i * 25, p))
    # The non-first fragment of a datagram whose first fragment was never captured.
    lost = ipv4_fragments(
        HOST4, RELAY4, 17, 50008, 3478, rng.randbytes(900), ident=0x3333, chunk=504
    )
    out.append((220_000, orphan(lost[1], 17)))
    return out


def ipv6_extra() -> list[Timed]:
    """Extension header chains before TCP and UDP, fragments, and an orphaned fragment."""
    rng = random.Random(229)
    hbh = IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
    dst16 = IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00" * 12)])  # length byte 1
    dst8 = IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00" * 4)])
    routing = IPv6ExtHdrRouting(addresses=["2001:db8:ffff::1"], segleft=0)  # length byte 2
    atomic = IPv6ExtHdrFragment(nh=17, offset=0, m=0, id=0xA70)

    def pkt(
        proto: int, sport: int, dport: int, ext: Sequence[Packet], inbound: bool = False
    ) -> Pkt:
        src, dst = (RELAY6, HOST6) if inbound else (HOST6, RELAY6)
        payload = tls(rng, 200) if proto == 6 else rtp(rng, 111, sport, 160, dport)
        return ip_packet(src, dst, proto, sport, dport, payload, inbound=inbound, ext=ext)

    items = [
        pkt(6, 52300, 443, [hbh]),
        pkt(6, 443, 52300, [dst16], inbound=True),
        pkt(17, 50009, 3478, [routing]),
        pkt(17, 3478, 50009, [hbh, dst8, routing], inbound=True),
        pkt(6, 52301, 25, [hbh, dst16, routing, dst8]),
        pkt(17, 50026, 50001, [dst8]),
        pkt(6, 50050, 52000, [hbh, dst8]),
        pkt(17, 50050, 52000, [hbh]),
    ]
    # An atomic fragment (offset 0, no more fragments) still carries its ports.
    raw = bytes(
        IPv6(src=HOST6, dst=RELAY6) / atomic / UDP(sport=50013, dport=3478) / Raw(rng.randbytes(80))
    )
    items.append(Pkt(raw, ETH_IPV6, classify(17, 50013, 3478)))
    # No next header after the options, and ICMPv6 after hop-by-hop: other.
    raw = bytes(IPv6(src=HOST6, dst=RELAY6) / IPv6ExtHdrDestOpt(nh=59, options=[PadN(optdata=b"")]))
    items.append(Pkt(raw, ETH_IPV6, classify(59)))
    raw = bytes(IPv6(src=HOST6, dst=GATEWAY6) / hbh.copy() / ICMPv6EchoRequest(id=3, seq=3))
    items.append(Pkt(raw, ETH_IPV6, classify(58)))
    out: list[Timed] = [(100_000 + i * 700, p) for i, p in enumerate(items)]
    # Fragmented datagrams behind a chain of extension headers, and a plain one.
    t = 120_000
    chained = ipv6_fragments(
        HOST6,
        RELAY6,
        17,
        50027,
        3478,
        rng.randbytes(2500),
        ident=0x10001,
        chunk=1232,
        ext=[hbh, dst16, routing],
    )
    plain = ipv6_fragments(
        RELAY6, HOST6, 6, 443, 52302, tls(rng, 1500), ident=0x10002, chunk=1200, inbound=True
    )
    # Destination options after the fragment header: the later fragment's next header
    # is 60, the first fragment's transport is UDP; they are one datagram all the same
    # (IPv6 reassembles by source, destination and identification).
    inner = ipv6_fragments(
        HOST6,
        RELAY6,
        17,
        50015,
        3478,
        rng.randbytes(1400),
        ident=0x10004,
        chunk=1232,
        ext=[hbh],
        after=[dst8],
    )
    order = [chained[0], plain[0], chained[1], plain[1], chained[2], inner[0], inner[1]]
    for i, p in enumerate(order):
        out.append((t + i * 40, p))
    lost = ipv6_fragments(
        HOST6, RELAY6, 17, 50014, 3478, rng.randbytes(1500), ident=0x10003, chunk=1232
    )
    out.append((130_000, orphan(lost[1], 17)))
    return out


def null_sample(n: int, linktype: int, *, big_endian: bool) -> Sample:
    # NULL: the address family in the file's byte order; IPv6 is 24 (NetBSD, OpenBSD),
    # 28 (FreeBSD) or 30 (macOS). LOOP: always big-endian (OpenBSD, IPv6 = 24).
    bo = ">" if big_endian or linktype == LINKTYPE_LOOP else "<"
    v6_families = [24] if linktype == LINKTYPE_LOOP else [24, 28, 30]
    recs = []
    k = 0
    for t, p in core_packets(40 + n):
        if p.ethertype == ETH_IPV6:
            family = v6_families[k % len(v6_families)]
            k += 1
        else:
            family = 2
        data = loopback(p, family, bo)
        recs.append(Record(start_of(n) + t, data, len(data), p.category))
    return Sample(pcap(recs, linktype, big_endian=big_endian), recs, link_types=(linktype,))


def unknown_linktype_sample() -> Sample:
    recs = [
        replace(r, category=classify(None), anomaly=ANOMALY_UNKNOWN_LINK)
        for r in records(core_packets(50), ethernet, start_of(15))
    ]
    return Sample(pcap(recs, LINKTYPE_USER0), recs, link_types=(LINKTYPE_USER0,))


def snaplen_sample() -> Sample:
    """Ethernet captured with a 56-byte snaplen: IPv4 ports survive, IPv6 ports and long
    IPv4 options do not, and some IP headers are cut themselves."""
    snap = 56
    rng = random.Random(56)
    start = start_of(16)
    recs: list[Record] = []

    def add(t: int, frame: bytes, pkt: Pkt, anomaly: str | None = None) -> None:
        # A packet whose ports (or IP header) were cut counts as if it had no ports.
        category = pkt.category if anomaly is None else classify(ip_protocol(pkt))
        recs.append(Record(start + t, frame[:snap], len(frame), category, anomaly))

    full = [
        ip_packet(HOST4, RELAY4, 17, 50002, 3478, rtp(rng, 111, 1, 160, 1), tos=DSCP_AUDIO),
        ip_packet(RELAY4, HOST4, 17, 3478, 50002, rtp(rng, 111, 2, 150, 2), inbound=True),
        ip_packet(HOST4, RELAY4, 17, 50022, 3478, rtp(rng, 122, 3, 1100, 3), tos=DSCP_VIDEO),
        ip_packet(OUTLOOK4, HOST4, 6, 443, 49800, tls(rng, 1380), inbound=True),
        ip_packet(HOST4, MX4, 6, 49801, 25, b"EHLO mail.contoso.com\r\n"),
        ip_packet(
            HOST4,
            GATEWAY4,
            17,
            50778,
            53,
            bytes(DNS(id=0x56, rd=1, qd=DNSQR(qname="outlook.office365.com"))),
        ),
        ip_packet(HOST4, LYNC4, 6, 50043, 443, tls(rng, 900)),
    ]
    t = 0
    for p in full:
        t += 900
        add(t, ethernet(p), p)
    t += 900
    add(t, ethernet(arp(True, inbound=False)), arp(True, inbound=False))
    t += 300
    add(t, ethernet(arp(False, inbound=True)), arp(False, inbound=True))
    # Behind a VLAN tag, an MPLS label or PPPoE, IPv4 ports still fit.
    p = ip_packet(HOST4, PUSH4, 6, 49802, 5223, tls(rng, 300))
    add(t + 1_000, ethernet(p, [(0x8100, 10)]), p)
    p = ip_packet(HOST4, MAIL4, 6, 49803, 995, tls(rng, 300))
    add(t + 2_000, mpls(p, [16]), p)
    p = ip_packet(HOST4, CDN4, 6, 49804, 80, b"GET / HTTP/1.1\r\nHost: officecdn\r\n\r\n" * 3)
    add(t + 3_000, pppoe(p), p)
    # IPv6 (54 bytes of headers) and IPv4 with 20 bytes of options keep 2 bytes of the
    # transport header: the ports are not captured.
    t += 10_000
    for p in [
        ip_packet(HOST6, OUTLOOK6, 6, 49805, 443, tls(rng, 600)),
        ip_packet(RELAY6, HOST6, 17, 3478, 50005, rtp(rng, 111, 4, 130, 4), inbound=True),
        ip_packet(
            HOST4,
            RELAY4,
            17,
            50006,
            3478,
            rtp(rng, 111, 5, 130, 5),
            options=[IPOption_RR(routers=["0.0.0.0"] * 4)],
        ),
    ]:
        t += 900
        add(t, ethernet(p), p, ANOMALY_PORTS_CUT)
    # Headers cut themselves: IPv6 behind a VLAN tag or three MPLS labels, IPv4 with 40
    # bytes of options.
    v6_tcp = ip_packet(HOST6, OUTLOOK6, 6, 49806, 443, tls(rng, 400))
    v6_udp = ip_packet(HOST6, RELAY6, 17, 50007, 3478, rtp(rng, 111, 6, 120, 6))
    long_options = ip_packet(
        HOST4,
        OUTLOOK4,
        6,
        49807,
        443,
        tls(rng, 300),
        options=[IPOption_RR(routers=["0.0.0.0"] * 9)],
    )
    for frame, p in [
        (ethernet(v6_tcp, [(0x8100, 10)]), v6_tcp),
        (mpls(v6_udp, [100, 200, 300]), v6_udp),
        (ethernet(long_options), long_options),
    ]:
        t += 900
        add(t, frame, p, ANOMALY_IP_CUT)
    # A fragmented audio datagram: the first fragment's ports are captured, the rest
    # need none.
    t += 900
    for i, p in enumerate(
        ipv4_fragments(
            HOST4,
            RELAY4,
            17,
            50008,
            3478,
            rng.randbytes(1200),
            ident=0x5656,
            chunk=600,
            tos=DSCP_AUDIO,
        )
    ):
        add(t + i * 40, ethernet(p), p)
    return Sample(
        pcap(recs, LINKTYPE_ETHERNET, snaplen=snap), recs, link_types=(LINKTYPE_ETHERNET,)
    )


def multi_section_sample() -> Sample:
    """Two sections (little- then big-endian), several interfaces each with its own link
    type and timestamp resolution, EPBs and SPBs, and blocks a reader must skip."""
    start = start_of(17)
    recs: list[Record] = []
    blocks: list[bytes] = []

    def take(
        items: Sequence[Timed],
        frame: Callable[[Pkt], bytes],
        snaplen: int,
        t0: int,
        quantum: int = 1_000,
    ) -> list[Record]:
        # Timestamps on a grid the interface's resolution represents exactly: 1 ms for
        # decimal resolutions, 1/64 s (15625 us) for binary ones.
        out = []
        for n, (t, p) in enumerate(items):
            whole = frame(p)
            ts = t0 + max(t // quantum, n) * quantum
            out.append(Record(ts, whole[:snaplen], len(whole), p.category))
        return out

    # Section 1, little-endian: 0 = Ethernet (ns), 1 = raw IP (2^-20 s).
    bo = "<"
    core = core_packets(60)
    eth = take(core[:12], ethernet, SNAPLEN, start)
    raw = take(core[12:], lambda p: p.l3, 65535, start + 6 * 15_625, quantum=15_625)
    extra = take(
        [(0, arp(True, inbound=False)), (1_000, arp(False, inbound=True))],
        ethernet,
        SNAPLEN,
        start + 200_000,
    )
    blocks.append(ng_shb(bo, [(3, b"Linux 6.1.0-amd64")]))
    # Snaplen 0 is "no limit": the simple packet blocks below hold whole packets.
    blocks.append(ng_idb(bo, LINKTYPE_ETHERNET, 0, [(2, b"eth0"), (9, bytes([9]))]))
    blocks.append(ng_idb(bo, LINKTYPE_RAW, 65535, [(2, b"tun0"), (9, bytes([0x94]))]))
    # Name resolution: one IPv4 record, then the end record.
    name = socket_ipv4(OUTLOOK4) + b"outlook.office365.com\x00"
    nrb = struct.pack(bo + "HH", 1, len(name)) + _pad4(name) + struct.pack(bo + "HH", 0, 0)
    blocks.append(ng_block(bo, 4, nrb))
    order: list[Record] = []
    for r_eth, r_raw in zip(eth[:6], raw[:6], strict=True):
        blocks += [ng_epb(bo, 0, 9, r_eth), ng_epb(bo, 1, 0x94, r_raw)]
        order += [r_eth, r_raw]
    blocks.append(ng_block(bo, 0x80000001, b"local use block, skipped by readers"))
    blocks += [ng_spb(bo, r) for r in eth[6:9]]
    # epb_flags (inbound) on the rest of interface 0.
    blocks += [ng_epb(bo, 0, 9, r, [(2, struct.pack(bo + "I", 0x1))]) for r in eth[9:]]
    blocks += [ng_epb(bo, 1, 0x94, r) for r in raw[6:]]
    blocks += [ng_spb(bo, r) for r in extra]
    order += eth[6:] + raw[6:] + extra
    isb = struct.pack(bo + "III", 0, 0, 0) + ng_options(
        bo, [(4, struct.pack(bo + "Q", 14)), (5, struct.pack(bo + "Q", 0))]
    )
    blocks.append(ng_block(bo, 5, isb))
    recs += order

    # Section 2, big-endian: 0 = Linux SLL (ms, snaplen 128), 1 = Ethernet (µs default),
    # 2 = raw IPv6 (2^-10 s).
    bo = ">"
    core2 = core_packets(61)
    v4 = [(t, p) for t, p in core2 if p.ethertype == ETH_IPV4]
    v6 = [(t, p) for t, p in core2 if p.ethertype == ETH_IPV6]
    t2 = start + 1_000_000
    sll_recs = take([*v4[:7], (20_000, arp(False, inbound=True))], sll, 128, t2)
    eth_recs = take(v4[7:], ethernet, SNAPLEN, t2 + 50_000)
    v6_recs = take(v6, lambda p: p.l3, SNAPLEN, t2 + 5 * 15_625, quantum=15_625)
    blocks.append(ng_shb(bo))
    blocks.append(ng_idb(bo, LINKTYPE_LINUX_SLL, 128, [(2, b"any"), (9, bytes([3]))]))
    blocks.append(ng_idb(bo, LINKTYPE_ETHERNET, SNAPLEN, [(2, b"eth1")]))
    blocks.append(ng_idb(bo, LINKTYPE_IPV6, SNAPLEN, [(2, b"ip6tnl0"), (9, bytes([0x8A]))]))
    blocks.append(ng_block(bo, 0x80000002, struct.pack(bo + "I", 0xDEC0DE)))
    for r in sll_recs[:4]:
        blocks.append(ng_epb(bo, 0, 3, r))
    for r in eth_recs:
        blocks.append(ng_epb(bo, 1, 6, r))
    for r in sll_recs[4:]:  # interface 0 of this section is Linux SLL, not Ethernet
        blocks.append(ng_spb(bo, r))
    for r in v6_recs:
        blocks.append(ng_epb(bo, 2, 0x8A, r))
    blocks.append(ng_block(bo, 5, struct.pack(bo + "III", 2, 0, 0)))
    recs += sll_recs[:4] + eth_recs + sll_recs[4:] + v6_recs
    types = (LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_IPV6)
    return Sample(b"".join(blocks), recs, link_types=types, fmt="pcapng")


def ip_protocol(pkt: Pkt) -> int:
    return int(IPv6(pkt.l3).nh if pkt.ethertype == ETH_IPV6 else IP(pkt.l3).proto)


def socket_ipv4(address: str) -> bytes:
    return bytes(int(x) for x in address.split("."))


def damaged_samples() -> dict[str, Sample]:
    start = start_of(18)
    base = records(core_packets(70), ethernet, start)
    whole = pcap(base, LINKTYPE_ETHERNET)
    # Cut in the middle of the last record's packet data.
    last = len(whole) - 16 - len(base[-1].data)
    truncated = Sample(
        whole[: last + 16 + len(base[-1].data) // 2],
        base[:-1],
        complete=False,
        offset=last,
        link_types=(LINKTYPE_ETHERNET,),
    )
    # A record header claiming 1 MiB after 12 good records; readable records follow it.
    good = base[:12]
    head = pcap(good, LINKTYPE_ETHERNET)
    bad = struct.pack("<IIII", (start + 30_000) // 1_000_000, 0, 1 << 20, 1 << 20)
    tail = pcap(base[12:], LINKTYPE_ETHERNET)[24:]
    corrupt = Sample(
        head + bad + tail,
        good,
        complete=False,
        exit=1,
        offset=len(head),
        link_types=(LINKTYPE_ETHERNET,),
    )
    # A report exported as CSV and saved under a capture's name.
    text = b"category,packets,bytes\naudio,114,19769\nvideo,30,22925\nother,24,11197\n"
    return {
        "truncated.pcap": truncated,
        "corrupt-record.pcap": corrupt,
        "not-a-capture.pcap": Sample(text, [], complete=False, exit=2, fmt=None),
        "empty.pcap": Sample(b"", [], complete=False, exit=2, fmt=None),
    }


def build() -> dict[str, Sample]:
    samples = mix_samples()
    samples["ethernet-vlan.pcap"] = vlan_sample()
    samples["ethernet-fcs.pcap"] = fcs_sample()
    samples["ethernet-mpls.pcap"] = mpls_sample()
    samples["ethernet-pppoe.pcap"] = pppoe_sample()
    samples["linux-sll.pcap"] = cooked_sample(4, sll, LINKTYPE_LINUX_SLL)
    samples["linux-sll2.pcap"] = cooked_sample(5, sll2, LINKTYPE_LINUX_SLL2)
    samples["raw-ip.pcap"] = raw_sample(6, LINKTYPE_RAW)
    samples["raw-ip-12.pcap"] = raw_sample(7, 12)
    samples["raw-ip-14.pcap"] = raw_sample(8, 14)
    samples["ipv4.pcap"] = raw_sample(9, LINKTYPE_IPV4, v6=False, extra=ipv4_extra())
    samples["ipv6.pcap"] = raw_sample(10, LINKTYPE_IPV6, v4=False, extra=ipv6_extra())
    samples["bsd-null.pcap"] = null_sample(11, LINKTYPE_NULL, big_endian=False)
    samples["bsd-null-be.pcap"] = null_sample(12, LINKTYPE_NULL, big_endian=True)
    samples["bsd-loop.pcap"] = null_sample(13, LINKTYPE_LOOP, big_endian=False)
    samples["unknown-linktype.pcap"] = unknown_linktype_sample()
    samples["snaplen-cut.pcap"] = snaplen_sample()
    samples["multi-section.pcapng"] = multi_section_sample()
    samples.update(damaged_samples())
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write (pcaps/)")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    samples = build()
    expected = {}
    for name, sample in samples.items():
        (out / name).write_bytes(sample.data)
        expected[name] = tally(sample)
    (out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
