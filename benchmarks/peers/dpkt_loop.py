#!/usr/bin/env python3
"""Per-packet reference classifier: dpkt reads the capture, one Python call per packet.

This is both a benchmark peer (what a straightforward Python tool does) and the slow,
easy-to-read reference decoder that the fast path is tested against. It counts every
record of a pcap or pcapng file under one category of a rule set, with these rules:

* bytes are the record's original (wire) length, ``orig_len``, not the captured length;
* no IP layer found -> ``non-ip``; an IP layer but no TCP/UDP ports (another protocol,
  or headers cut by the snaplen) -> ``other``; otherwise ``rules.classify_one(proto,
  sport, dport)``;
* a non-first fragment (IPv4 offset > 0, or an IPv6 fragment header with offset > 0)
  takes the category of its datagram's first fragment (offset 0, more-fragments set).
  IPv4 datagrams are keyed by (source, destination, protocol, identification); IPv6
  ones by (source, destination, identification) only, as RFC 8200 names them: the
  header after a fragment header can differ between the fragments of one datagram.
  With several fragment headers, the last one's identification counts. A non-first
  fragment that comes before its first fragment is counted as ``other`` until that
  first fragment arrives, then moved to the datagram's category; if the first fragment
  never comes it stays ``other``. Both tables cover the whole file (see
  ``_tally.Tally``).

How the IP header is reached, per link type (``link type & 0xFFFF`` of the pcap header or
of each pcapng interface):

* 1 Ethernet: EtherType at byte 12, then the EtherType chain below.
* 113 Linux cooked (SLL): protocol at byte 14, payload at 16; 276 (SLL2): protocol at
  byte 0, payload at 20. The protocol is an EtherType and goes through the same chain
  (so a cooked capture of VLAN-tagged, MPLS or PPPoE frames is followed too).
* 0 BSD null: 4-byte address family in the writer's byte order, read in the file's (pcap)
  or section's (pcapng) byte order and byte-swapped when that reading does not fit in
  16 bits (as Wireshark does: a file may be converted without its packets); 108 loop:
  big-endian. 2 is IPv4; 24, 28 and 30 are IPv6.
* 101, 12, 14 raw IP: IPv4 or IPv6 by the version nibble; 228 IPv4; 229 IPv6.
* 104 Cisco HDLC: address, control, then an EtherType at byte 2 (payload at 4) that
  goes through the chain below.
* 9 PPP, 50 PPP in HDLC framing: a first byte of 0x0F or 0x8F (and at least 4 bytes)
  is Cisco HDLC framing, read as for 104. Otherwise an optional 0xFF 0x03 address and
  control, then the 2-byte PPP protocol: 0x0021 IPv4, 0x0057 IPv6, 0x0281 / 0x0283
  MPLS (the label stack as below); any other protocol, or fewer than 2 bytes for it,
  is ``non-ip``.
* Any other link type: ``non-ip``.

The EtherType chain, its steps stacked in any order and depth: 4-byte 802.1Q (0x8100)
/ 802.1ad (0x88A8) / 0x9100 tags, the next EtherType in their last 2 bytes; 0x8903
Cisco FabricPath, 2 bytes of FTag/TTL then the whole inner Ethernet frame (6 + 6 MAC
bytes, then its EtherType), so the next EtherType is 14 bytes after the FabricPath
EtherType and what it names starts 2 bytes later; 0x0800 IPv4; 0x86DD IPv6; 0x8847 /
0x8848 MPLS, 4-byte labels up to the one with the bottom-of-stack bit, then IPv4 or
IPv6 by the version nibble (anything else, such as an Ethernet pseudowire, is
``non-ip``); 0x8864 PPPoE session, 6-byte PPPoE header, then PPP protocol 0x0021 IPv4
/ 0x0057 IPv6. Other EtherTypes (ARP, LLC lengths, ...) and frames cut before the
EtherType chain ends are ``non-ip``.

Choices for odd packets (never an exception):

* Once the link layer names IP (EtherType, PPP protocol, address family, SLL protocol,
  link type 228/229), the packet is IP: an IP header that is cut short, has the wrong
  version nibble or an IHL below 5 makes it ``other``. Where only the version nibble
  names IP (raw link types, after MPLS), a nibble other than 4 or 6, or no byte at all,
  is ``non-ip``.
* The IPv4 total length and the IPv6 payload length are not used: ports are read from
  the captured bytes after IHL x 4 (IPv4) or after the extension headers (IPv6:
  hop-by-hop 0, routing 43, destination options 60, fragment 44; no limit on their
  number). Ports must be captured in full (4 bytes), else ``other``; so an IPv4 header
  whose options are cut by the snaplen is ``other`` too (a first fragment among them
  still names its datagram's category: ``other``).
* Any exception a decoder raises all the same is caught per packet: ``other`` when the
  link layer had found IP, else ``non-ip``.

Reading the file: ``dpkt.pcap.Reader`` checks the pcap file header and gives the link
type, and dpkt's record header classes (``dpkt.pcap.MAGIC_TO_PKT_HDR``: microsecond,
nanosecond, either byte order, and the 24-byte "modified pcap" records) read each record,
because ``Reader`` itself does not return ``orig_len``. pcapng is walked block by block
with struct (dpkt's pcapng reader keeps only the first interface's link type and drops
``orig_len`` and Simple Packet Blocks): several sections with their own byte order,
several interfaces with their own link types, Enhanced (6), Simple (3) and obsolete
(2) Packet Blocks; other blocks are skipped. Either format may be gzip-compressed. A
file cut off mid-record ends the count there (the result is flagged ``incomplete``); a
record claiming more than 256 KiB, or a pcapng block with a bad length, also ends it
(``problem`` says where).

``--decode objects`` swaps the Ethernet decoder for dpkt's own classes
(``dpkt.ethernet.Ethernet`` and what it builds: ``ip.IP``, ``ip6.IP6``, ``tcp.TCP``,
``udp.UDP``), as a typical dpkt script would. It is a benchmark variant only: dpkt's
heuristics (at most two VLAN tags, guessing the protocol after MPLS, ...) differ from the
rules above on odd frames. It agrees on the plain Ethernet/VLAN/IPv4/IPv6 traffic of
``benchmarks/make_mix.py``.

Usage::

    python benchmarks/peers/dpkt_loop.py CAPTURE [--rules FILE] [--limit N]

prints ``{"totals": ..., "categories": ..., "run": ...}`` as JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import dpkt  # type: ignore[import-untyped]

try:
    from classifier.rules import NON_IP, OTHER, RuleSet, load_rules
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from classifier.rules import NON_IP, OTHER, RuleSet, load_rules

try:
    from ._tally import FIRST, LATER, NONE, FragKey, Tally
except ImportError:  # run as a script
    from _tally import (  # type: ignore[no-redef, import-not-found, unused-ignore]
        FIRST,
        LATER,
        NONE,
        FragKey,
        Tally,
    )

__all__ = ["Result", "classify_file", "count_file"]

#: A record longer than this is taken for corruption and ends the reading.
MAX_RECORD = 256 * 1024
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))
#: First byte of a Cisco HDLC frame (unicast, multicast) inside a PPP capture.
CHDLC_ADDRESSES = frozenset((0x0F, 0x8F))
IPV6_EXT = frozenset((0, 43, 60))
RAW_LINKS = frozenset((101, 12, 14))
LE_MAGICS = frozenset((dpkt.pcap.PMUDPCT_MAGIC, dpkt.pcap.PMUDPCT_MAGIC_NANO,
                       dpkt.pcap.PACPDOM_MAGIC))

# Where the link layer leaves us: (kind, offset). kind 4/6: IPv4/IPv6 header at offset;
# 0: no IP layer.
NO_IP = (0, 0)
Classify = Callable[[int, int, int], str]


@dataclass
class Result:
    """Counts of one capture."""

    tally: Tally
    incomplete: bool = False
    problem: str | None = None
    link_types: Counter[int] = field(default_factory=Counter)
    #: IP packets whose TCP/UDP ports were not (fully) captured.
    ports_cut: int = 0

    @property
    def packets(self) -> int:
        return self.tally.packets

    @property
    def bytes(self) -> int:
        return self.tally.bytes

    @property
    def categories(self) -> dict[str, list[int]]:
        """category -> [packets, bytes]"""
        return self.tally.counts

    def as_dict(self) -> dict[str, Any]:
        return self.tally.as_dict()


def _from_ethertype(data: bytes, et: int, off: int) -> tuple[int, int]:
    """Follow an EtherType (and what it encapsulates) to the IP header.

    VLAN tags, FabricPath headers and PPPoE sessions may stack in any order and depth;
    MPLS ends the chain (the version nibble after the bottom label decides)."""
    n = len(data)
    while True:
        if et in VLAN_TPIDS:
            if n < off + 4:
                return NO_IP
            et = (data[off + 2] << 8) | data[off + 3]
            off += 4
        elif et == 0x8903:  # Cisco FabricPath: FTag/TTL, then a whole Ethernet frame
            if n < off + 16:
                return NO_IP
            et = (data[off + 14] << 8) | data[off + 15]
            off += 16
        elif et == 0x8864:  # PPPoE session: 6-byte header, then the PPP protocol
            if n < off + 8:
                return NO_IP
            ppp = (data[off + 6] << 8) | data[off + 7]
            off += 8
            if ppp == 0x0021:
                return 4, off
            if ppp == 0x0057:
                return 6, off
            return NO_IP
        elif et == 0x8847 or et == 0x8848:
            return _after_mpls(data, off)
        elif et == 0x0800:
            return 4, off
        elif et == 0x86DD:
            return 6, off
        else:
            return NO_IP


def _after_mpls(data: bytes, off: int) -> tuple[int, int]:
    """IPv4 or IPv6 after an MPLS label stack, by the version nibble."""
    n = len(data)
    while True:
        if n < off + 4:
            return NO_IP
        bottom = data[off + 2] & 1
        off += 4
        if bottom:
            break
    if n <= off:
        return NO_IP
    version = data[off] >> 4
    return (version, off) if version in (4, 6) else NO_IP


def _ppp(data: bytes) -> tuple[int, int]:
    """PPP (link types 9 and 50): Cisco HDLC framing when the first byte is 0x0F or 0x8F;
    else an optional 0xFF 0x03 address and control, then the 2-byte PPP protocol."""
    n = len(data)
    if n >= 4 and data[0] in CHDLC_ADDRESSES:
        return _from_ethertype(data, (data[2] << 8) | data[3], 4)
    off = 2 if n >= 2 and data[0] == 0xFF and data[1] == 0x03 else 0
    if n < off + 2:
        return NO_IP
    proto = (data[off] << 8) | data[off + 1]
    off += 2
    if proto == 0x0021:
        return 4, off
    if proto == 0x0057:
        return 6, off
    if proto == 0x0281 or proto == 0x0283:
        return _after_mpls(data, off)
    return NO_IP


def _family(family: int, off: int) -> tuple[int, int]:
    if family > 0xFFFF:  # written in the other byte order
        family = int.from_bytes(family.to_bytes(4, "little"), "big")
    if family == 2:
        return 4, off
    if family in (24, 28, 30):
        return 6, off
    return NO_IP


def link_decoder(link: int, little: bool) -> Callable[[bytes], tuple[int, int]]:
    """The function that finds the IP header in a frame of this link type."""
    link &= 0xFFFF
    if link == 1:
        def ether(data: bytes) -> tuple[int, int]:
            if len(data) < 14:
                return NO_IP
            return _from_ethertype(data, (data[12] << 8) | data[13], 14)
        return ether
    if link == 113:
        def sll(data: bytes) -> tuple[int, int]:
            if len(data) < 16:
                return NO_IP
            return _from_ethertype(data, (data[14] << 8) | data[15], 16)
        return sll
    if link == 276:
        def sll2(data: bytes) -> tuple[int, int]:
            if len(data) < 20:
                return NO_IP
            return _from_ethertype(data, (data[0] << 8) | data[1], 20)
        return sll2
    if link == 104:
        def chdlc(data: bytes) -> tuple[int, int]:
            if len(data) < 4:
                return NO_IP
            return _from_ethertype(data, (data[2] << 8) | data[3], 4)
        return chdlc
    if link == 9 or link == 50:
        return _ppp
    if link in RAW_LINKS:
        def raw(data: bytes) -> tuple[int, int]:
            if not data:
                return NO_IP
            version = data[0] >> 4
            return (version, 0) if version in (4, 6) else NO_IP
        return raw
    if link == 228:
        return lambda data: (4, 0)
    if link == 229:
        return lambda data: (6, 0)
    if link == 0:
        order: Literal["little", "big"] = "little" if little else "big"

        def null(data: bytes) -> tuple[int, int]:
            if len(data) < 4:
                return NO_IP
            return _family(int.from_bytes(data[:4], order), 4)
        return null
    if link == 108:
        def loop(data: bytes) -> tuple[int, int]:
            if len(data) < 4:
                return NO_IP
            return _family(int.from_bytes(data[:4], "big"), 4)
        return loop
    return lambda data: NO_IP


def _ports(data: bytes, off: int, proto: int, classify: Classify) -> str | None:
    """Category from the TCP/UDP ports at ``off``; None when they were not captured."""
    if proto != 6 and proto != 17:
        return OTHER
    if len(data) < off + 4:
        return None
    return classify(proto, (data[off] << 8) | data[off + 1], (data[off + 2] << 8) | data[off + 3])


def ip_category(data: bytes, kind: int, off: int,
                classify: Classify) -> tuple[str, bool, int, FragKey | None]:
    """Category of an IP packet whose IPv4/IPv6 header starts at ``off``, whether its
    ports were cut off by the snaplen, and its fragment role and key (``_tally``)."""
    n = len(data)
    key: FragKey | None
    if kind == 4:
        if n < off + 20:
            return OTHER, True, NONE, None
        if data[off] >> 4 != 4:
            return OTHER, False, NONE, None
        ihl = (data[off] & 0x0F) * 4
        if ihl < 20:
            return OTHER, False, NONE, None
        proto = data[off + 9]
        flags_frag = (data[off + 6] << 8) | data[off + 7]
        if flags_frag & 0x3FFF:
            key = (4, data[off + 12:off + 20], proto, data[off + 4:off + 6])
            if flags_frag & 0x1FFF:
                return OTHER, False, LATER, key
            role = FIRST
        else:
            key, role = None, NONE
        cat = _ports(data, off + ihl, proto, classify)
        if cat is None:
            return OTHER, True, role, key
        return cat, False, role, key
    # IPv6
    if n < off + 40:
        return OTHER, True, NONE, None
    if data[off] >> 4 != 6:
        return OTHER, False, NONE, None
    addresses = data[off + 8:off + 40]
    nh = data[off + 6]
    p = off + 40
    role = NONE
    ident = b""  # identification of the last fragment header
    cat = None
    while True:
        if nh in IPV6_EXT:
            if n < p + 2:
                break
            nh, p = data[p], p + (data[p + 1] + 1) * 8
        elif nh == 44:
            if n < p + 8:
                break
            nh = data[p]
            ident = data[p + 4:p + 8]
            if ((data[p + 2] << 8) | data[p + 3]) >> 3:
                return OTHER, False, LATER, (6, addresses, ident)
            if data[p + 3] & 1:
                role = FIRST
            p += 8
        else:
            cat = _ports(data, p, nh, classify)
            break
    key = (6, addresses, ident) if role == FIRST else None
    if cat is None:
        return OTHER, True, role, key
    return cat, False, role, key


def _pcap_records(f: BinaryIO, result: Result) -> Iterator[tuple[int, bool, bytes, int]]:
    """(link type, little-endian, data, orig_len) of each pcap record."""
    head = f.read(4)
    f.seek(0)
    try:
        reader = dpkt.pcap.Reader(f)
    except (ValueError, dpkt.Error, struct.error) as exc:
        raise ValueError(f"not a pcap or pcapng file: {exc}") from None
    magic = int.from_bytes(head, "big")
    hdr_class = dpkt.pcap.MAGIC_TO_PKT_HDR[magic]
    hdr_len = hdr_class.__hdr_len__
    little = magic in LE_MAGICS
    link = reader.datalink() & 0xFFFF
    offset = 24
    read = f.read
    while True:
        buf = read(hdr_len)
        if len(buf) < hdr_len:
            if buf:
                result.incomplete = True
                result.problem = f"record header cut off at byte {offset}"
            return
        hdr = hdr_class(buf)
        caplen = hdr.caplen
        if caplen > MAX_RECORD:
            result.incomplete = True
            result.problem = f"record at byte {offset} claims {caplen} bytes"
            return
        data = read(caplen)
        if len(data) < caplen:
            result.incomplete = True
            result.problem = f"record at byte {offset} cut off"
            return
        offset += hdr_len + caplen
        yield link, little, data, hdr.len


def _pcapng_records(f: BinaryIO, result: Result) -> Iterator[tuple[int, bool, bytes, int]]:
    """(link type, little-endian, data, orig_len) of each packet block of a pcapng file."""
    order = "<"
    little = True
    interfaces: list[tuple[int, int]] = []  # (link type, snaplen)
    offset = 0
    read = f.read
    while True:
        head = read(8)
        if len(head) < 8:
            if head:
                result.incomplete = True
                result.problem = f"block header cut off at byte {offset}"
            return
        if head[:4] == PCAPNG_SHB:
            bom = read(4)
            if bom == b"\x4d\x3c\x2b\x1a":
                order, little = "<", True
            elif bom == b"\x1a\x2b\x3c\x4d":
                order, little = ">", False
            else:
                result.incomplete = True
                result.problem = f"section header at byte {offset} has no byte-order magic"
                return
            (length,) = struct.unpack(order + "I", head[4:])
            if length < 28 or length % 4 or len(read(length - 12)) < length - 12:
                result.incomplete = True
                result.problem = f"section header at byte {offset} is damaged"
                return
            interfaces = []
            offset += length
            continue
        btype, length = struct.unpack(order + "II", head)
        if length < 12 or length % 4:
            result.incomplete = True
            result.problem = f"block at byte {offset} has a bad length {length}"
            return
        if length > MAX_RECORD + 64 and btype in (2, 3, 6):
            result.incomplete = True
            result.problem = f"packet block at byte {offset} claims {length} bytes"
            return
        body = read(length - 8)
        if len(body) < length - 8:
            result.incomplete = True
            result.problem = f"block at byte {offset} cut off"
            return
        offset += length
        room = length - 12  # body bytes before the trailing length
        if btype == 6 or btype == 2:
            if room < 20:
                continue
            if btype == 6:
                iface, _, _, caplen, orig = struct.unpack_from(order + "IIIII", body)
            else:
                iface, _, _, _, caplen, orig = struct.unpack_from(order + "HHIIII", body)
            if caplen > room - 20:
                result.incomplete = True
                result.problem = f"packet block at byte {offset - length} overruns its block"
                return
            data = body[20:20 + caplen]
        elif btype == 3:
            if room < 4:
                continue
            iface = 0
            (orig,) = struct.unpack_from(order + "I", body)
            caplen = min(orig, room - 4)
            if interfaces and interfaces[0][1]:
                caplen = min(caplen, interfaces[0][1])
            data = body[4:4 + caplen]
        elif btype == 1:
            if room >= 8:
                link, _, snaplen = struct.unpack_from(order + "HHI", body)
                interfaces.append((link, snaplen))
            continue
        else:
            continue
        link = interfaces[iface][0] if iface < len(interfaces) else -1
        yield link, little, data, orig


def _objects_ether(data: bytes,
                   classify: Classify) -> tuple[str, bool, int, FragKey | None]:
    """Ethernet decoded with dpkt's own classes (the ``--decode objects`` variant)."""
    eth = dpkt.ethernet.Ethernet(data)
    ip = eth.data
    if isinstance(ip, dpkt.ip.IP):
        key = (4, ip.src + ip.dst, ip.p, ip.id.to_bytes(2, "big"))
        if ip.offset:
            return OTHER, False, LATER, key
        role = FIRST if ip.mf else NONE
        l4 = ip.data
        if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
            return classify(ip.p, l4.sport, l4.dport), False, role, key
        return OTHER, ip.p in (6, 17), role, key
    if isinstance(ip, dpkt.ip6.IP6):
        l4 = ip.data
        if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
            return classify(ip.p, l4.sport, l4.dport), False, NONE, None
        return OTHER, ip.p in (6, 17), NONE, None
    return NON_IP, False, NONE, None


def _open(path: str | Path) -> BinaryIO:
    """The capture's bytes, decompressed when the file is gzip."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    if compressed:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def count_file(path: str | Path, rules: RuleSet, limit: int | None = None,
               decode: str = "struct") -> Result:
    """Count the packets and wire bytes of a capture per category of ``rules``."""
    tally = Tally(rules.categories)
    result = Result(tally)
    cache: dict[tuple[int, int, int], str] = {}
    classify_one = rules.classify_one

    def classify(proto: int, a: int, b: int) -> str:
        key = (proto, a, b)
        cat = cache.get(key)
        if cat is None:
            cat = cache[key] = classify_one(proto, a, b)
        return cat

    decoders: dict[tuple[int, bool], Callable[[bytes], tuple[int, int]]] = {}
    link_types = result.link_types
    add = tally.add
    packets = cut_count = 0
    with _open(path) as f:
        head = f.read(4)
        f.seek(0)
        records = _pcapng_records(f, result) if head == PCAPNG_SHB else _pcap_records(f, result)
        for link, little, data, orig in records:
            if limit is not None and packets >= limit:
                break
            packets += 1
            link_types[link] += 1
            if decode == "objects" and link == 1:
                try:
                    cat, cut, role, key = _objects_ether(data, classify)
                except Exception:  # dpkt raises several types on short or odd frames
                    cat, cut, role, key = OTHER, False, NONE, None
            else:
                decoder = decoders.get((link, little))
                if decoder is None:
                    decoder = decoders[(link, little)] = link_decoder(link, little)
                try:
                    kind, off = decoder(data)
                except Exception:
                    kind, off = NO_IP
                if kind == 0:
                    cat, cut, role, key = NON_IP, False, NONE, None
                else:
                    try:
                        cat, cut, role, key = ip_category(data, kind, off, classify)
                    except Exception:
                        cat, cut, role, key = OTHER, False, NONE, None
            if cut:
                cut_count += 1
            add(cat, orig, role, key)
    result.ports_cut = cut_count
    return result


def classify_file(path: str, rules: RuleSet) -> dict[str, Any]:
    """``{"totals": {"packets", "bytes"}, "categories": {cat: {"packets", "bytes"}}}`` of a
    capture, every category of ``rules`` included (zeros too)."""
    return count_file(path, rules).as_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify a capture with a per-packet dpkt loop.")
    parser.add_argument("capture")
    parser.add_argument("--rules", help="rule set file (default: the shipped 2015 table)")
    parser.add_argument("--limit", type=int, help="stop after this many packets")
    parser.add_argument("--decode", choices=("struct", "objects"), default="struct",
                        help="struct: the reference decoder; objects: dpkt's Ethernet classes")
    args = parser.parse_args(argv)
    rules = load_rules(args.rules)
    start = time.perf_counter()
    try:
        result = count_file(args.capture, rules, args.limit, args.decode)
    except (OSError, ValueError) as exc:
        print(f"dpkt_loop: {args.capture}: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    out = result.as_dict()
    out["run"] = {
        "tool": f"dpkt {dpkt.__version__} ({args.decode})",
        "seconds": round(elapsed, 6),
        "packets_per_s": round(result.packets / elapsed, 1) if elapsed > 0 else None,
        "incomplete": result.incomplete,
        "problem": result.problem,
        "ports_cut": result.ports_cut,
        "orphan_fragments": result.tally.orphans,
        "link_types": {str(k): v for k, v in sorted(result.link_types.items())},
    }
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
