"""Hypothesis strategies shared by the tests."""

from __future__ import annotations

from hypothesis import strategies as st

from classifier.rules import Rule, RuleSet

ports = st.integers(0, 65535)


@st.composite
def port_ranges(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    """A few port ranges, biased towards the edges and the Office 365 ports."""
    edge = st.sampled_from([0, 1023, 1024, 443, 3478, 50000, 50019, 50020, 59999, 65535])
    items = []
    for _ in range(draw(st.integers(0, 3))):
        a = draw(st.one_of(edge, ports))
        b = draw(st.one_of(edge, ports, st.just(a)))
        items.append((min(a, b), max(a, b)))
    return tuple(items)


@st.composite
def rule_sets(draw: st.DrawFn, max_rules: int = 12) -> RuleSet:
    """Random rule sets; some rules share a category."""
    n = draw(st.integers(0, max_rules))
    rules = []
    for i in range(n):
        protos = draw(st.sampled_from([("tcp",), ("udp",), ("tcp", "udp"), ("udp", "tcp")]))
        category = draw(st.sampled_from([f"c{i}", "shared-a", "shared-b"]))
        rules.append(Rule(
            name=f"r{i}", category=category, description="",
            protocols=protos,
            client={p: draw(port_ranges()) for p in protos},
            server={p: draw(port_ranges()) for p in protos},
        ))
    return RuleSet("random", "", tuple(rules))


@st.composite
def many_rule_sets(draw: st.DrawFn) -> RuleSet:
    """Rule sets past 64 rules, which need more than one bitmask word."""
    n = draw(st.integers(60, 140))
    rules = []
    for i in range(n):
        lo = draw(st.integers(0, 65535))
        hi = draw(st.integers(lo, min(65535, lo + 3000)))
        s = draw(ports)
        rules.append(Rule(f"r{i}", f"c{i % 70}", "", ("udp",), {"udp": ((lo, hi),)},
                          {"udp": ((s, s),)}))
    return RuleSet("many", "", tuple(rules))


@st.composite
def records(draw: st.DrawFn) -> list[tuple[int, bytes, int]]:
    """Capture records: (timestamp in ns, captured bytes, original length)."""
    out = []
    ts = draw(st.integers(0, 2**31)) * 1_000_000_000
    for _ in range(draw(st.integers(0, 40))):
        ts += draw(st.integers(0, 5_000_000_000))
        ts = min(ts, (2**32 - 1) * 1_000_000_000)
        data = draw(st.binary(max_size=600))
        orig = len(data) + draw(st.sampled_from([0, 0, 0, 1, 1000]))
        out.append((ts, data, orig))
    return out


# ---- Packet captures: link layers, encapsulations, IP and TCP/UDP, with snaplen cuts ----

#: Ports of the Office 365 port table (servers), and the edges of its ranges.
O365_PORTS = (443, 3478, 5223, 25, 587, 143, 993, 995, 80)
O365_PORT_EDGES = (0, 1023, 1024, 49999, 50000, 50019, 50020, 50039, 50040, 50059, 50060,
                   59999, 60000, 65535)
o365_ports = st.one_of(
    st.sampled_from(O365_PORTS),
    st.integers(50000, 50059),
    st.sampled_from(O365_PORT_EDGES),
    st.integers(1024, 65535),
    ports,
)

#: Few addresses and identifications, so that fragments of one datagram meet.
_V4_ADDRESSES = (bytes((10, 0, 0, 7)), bytes((52, 96, 0, 10)))
_V6_ADDRESSES = (bytes.fromhex("20010db8000000000000000000000007"),
                 bytes.fromhex("2603103700000000000000000000000a"))
_FRAGMENT_IDS = (1, 2)
#: Link types whose frames :func:`captures` builds.
CAPTURE_LINKTYPES = (1, 1, 1, 113, 276, 101, 12, 14, 228, 229, 0, 108, 9, 50, 104)


def _be16(value: int) -> bytes:
    return value.to_bytes(2, "big")


@st.composite
def o365_port_pairs(draw: st.DrawFn) -> tuple[int, int]:
    """(source port, destination port): mostly a client port (ephemeral or a Lync media
    port) talking to an Office 365 server port, either way round; else any two."""
    if draw(st.sampled_from((True, True, False))):
        client = draw(st.one_of(st.integers(50000, 50059), st.integers(1024, 65535)))
        server = draw(st.one_of(st.sampled_from(O365_PORTS), st.integers(50000, 59999)))
        return (client, server) if draw(st.booleans()) else (server, client)
    return draw(o365_ports), draw(o365_ports)


@st.composite
def transport_segments(draw: st.DrawFn) -> tuple[int, bytes]:
    """(IP protocol, transport header and payload): mostly TCP or UDP between ports
    biased towards the Office 365 ones; sometimes SCTP, ICMP, ESP or anything."""
    proto = draw(st.sampled_from((6,) * 8 + (17,) * 8 + (132, 1, 58, 50, 59)))
    payload = draw(st.binary(max_size=24))
    if proto in (6, 17, 132):
        sport, dport = draw(o365_port_pairs())
        head = _be16(sport) + _be16(dport)
        if proto == 6:
            head += (draw(st.binary(min_size=8, max_size=8)) + bytes((0x50,))
                     + bytes((draw(st.integers(0, 255)),)) + b"\xff\xff\x00\x00\x00\x00")
        elif proto == 17:
            head += _be16(8 + len(payload)) + b"\x00\x00"
        else:
            head += bytes(8)
    else:
        head = draw(st.binary(min_size=4, max_size=8))
    return proto, head + payload


@st.composite
def ipv4_packets(draw: st.DrawFn) -> bytes:
    """IPv4 over TCP/UDP (or another protocol): options, fragments, odd headers."""
    proto, segment = draw(transport_segments())
    options = draw(st.sampled_from((b"", b"", b"", b"\x01\x01\x01\x00",
                                    b"\x07\x0b\x04" + bytes(9), bytes(40))))
    ihl = 5 + len(options) // 4
    version_ihl = draw(st.sampled_from((0x40 | ihl,) * 12 + (0x44, 0x60 | ihl, 0x4F)))
    frag = draw(st.sampled_from((0,) * 6 + (0x4000,) * 4 + (0x2000, 0x2000, 0x2000 | 185,
                                                             185, 1, 0x1FFF)))
    ident = draw(st.sampled_from(_FRAGMENT_IDS))
    src, dst = draw(st.permutations(_V4_ADDRESSES))
    header = (bytes((version_ihl, draw(st.sampled_from((0, 0xB8, 0x88)))))
              + _be16(4 * ihl + len(segment)) + _be16(ident) + _be16(frag)
              + bytes((64, proto)) + b"\x00\x00" + src + dst + options)
    return header + segment


@st.composite
def ipv6_packets(draw: st.DrawFn) -> bytes:
    """IPv6 over TCP/UDP (or another protocol), through hop-by-hop, routing,
    destination-options and fragment headers."""
    proto, segment = draw(transport_segments())
    chain = draw(st.lists(st.sampled_from((0, 43, 60, 44)), max_size=3))
    body = segment
    nh = proto
    for ext in reversed(chain):
        if ext == 44:
            offset = draw(st.sampled_from((0, 0, 1, 185)))
            more = draw(st.booleans())
            ident = draw(st.sampled_from(_FRAGMENT_IDS))
            body = (bytes((nh, 0)) + _be16(offset << 3 | more) + ident.to_bytes(4, "big")
                    + body)
        else:
            units = draw(st.integers(0, 1))
            body = bytes((nh, units)) + bytes(6 + 8 * units) + body
        nh = ext
    first = draw(st.sampled_from((0x60,) * 12 + (0x40, 0x6B)))
    src, dst = draw(st.permutations(_V6_ADDRESSES))
    return (bytes((first, 0, 0, 0)) + _be16(len(body)) + bytes((nh, 64)) + src + dst
            + body)


@st.composite
def network_packets(draw: st.DrawFn) -> tuple[int, bytes]:
    """(EtherType, packet): IPv4, IPv6, or something else (ARP, an LLC length, bytes)."""
    kind = draw(st.sampled_from(("4", "4", "4", "6", "6", "6", "other")))
    if kind == "4":
        return 0x0800, draw(ipv4_packets())
    if kind == "6":
        return 0x86DD, draw(ipv6_packets())
    et = draw(st.sampled_from((0x0806, 0x88CC, 0x0026, 0x8863, 0x0800, 0x86DD)))
    return et, draw(st.binary(max_size=60))


@st.composite
def ether_payloads(draw: st.DrawFn, stacked: bool = True) -> tuple[int, bytes]:
    """(EtherType, what follows it): a network packet, maybe in MPLS or a PPPoE session,
    under any stack of VLAN tags and FabricPath headers (none unless ``stacked``)."""
    et, body = draw(network_packets())
    inner = draw(st.sampled_from(("", "", "mpls", "pppoe")))
    if inner == "mpls":
        labels = draw(st.lists(st.integers(0, 2**20 - 1), min_size=1, max_size=3))
        stack = b"".join(
            (label << 12 | (i == len(labels) - 1) << 8 | 64).to_bytes(4, "big")
            for i, label in enumerate(labels)
        )
        et, body = draw(st.sampled_from((0x8847, 0x8848))), stack + body
    elif inner == "pppoe":
        ppp = {0x0800: 0x0021, 0x86DD: 0x0057}.get(et, 0xC021)
        body = b"\x11\x00" + _be16(draw(st.integers(0, 0xFFFF))) + _be16(len(body) + 2) \
            + _be16(ppp) + body
        et = 0x8864
    outers = draw(st.lists(st.sampled_from(("vlan", "fabricpath")), max_size=3)) if stacked \
        else []
    for outer in outers:
        if outer == "vlan":
            tci = draw(st.integers(0, 0xFFFF))
            body = _be16(tci) + _be16(et) + body
            et = draw(st.sampled_from((0x8100, 0x88A8, 0x9100)))
        else:
            body = b"\x00\x3f" + draw(st.binary(min_size=12, max_size=12)) + _be16(et) + body
            et = 0x8903
    return et, body


@st.composite
def link_frames(draw: st.DrawFn, linktype: int) -> bytes:
    """One frame of ``linktype`` (see :data:`CAPTURE_LINKTYPES`), or random bytes."""
    if draw(st.sampled_from((False,) * 19 + (True,))):
        return draw(st.binary(max_size=80))
    if linktype in (101, 12, 14, 228, 229, 0, 108):
        # Link types that carry IP only: no EtherType chain.
        if linktype == 228:
            return draw(ipv4_packets())
        if linktype == 229:
            return draw(ipv6_packets())
        et, body = draw(network_packets())
        if linktype in (101, 12, 14):
            return body  # the version nibble decides
        family = {0x0800: st.just(2), 0x86DD: st.sampled_from((24, 28, 30))}.get(
            et, st.integers(0, 40))
        value = draw(family)
        if linktype == 108 or draw(st.booleans()):
            return value.to_bytes(4, "big") + body
        return value.to_bytes(4, "little") + body
    # PPP framing carries IP or MPLS only; else Cisco HDLC framing, with an EtherType.
    ppp_framing = linktype in (9, 50) and draw(st.sampled_from((True, True, True, False)))
    et, body = draw(ether_payloads(stacked=not ppp_framing))
    if linktype == 1:
        return draw(st.binary(min_size=12, max_size=12)) + _be16(et) + body
    if linktype == 113:
        return b"\x00\x00\x00\x01\x00\x06" + bytes(8) + _be16(et) + body
    if linktype == 276:
        return _be16(et) + b"\x00\x00\x00\x00\x00\x02\x00\x01\x00\x06" + bytes(8) + body
    if linktype in (9, 50):
        ppp = {0x0800: 0x0021, 0x86DD: 0x0057, 0x8847: 0x0281, 0x8848: 0x0283}.get(et)
        if ppp is not None and ppp_framing:
            return draw(st.sampled_from((b"", b"\xff\x03"))) + _be16(ppp) + body
    # Cisco HDLC (104), also as the framing of a PPP capture (9, 50)
    return bytes((draw(st.sampled_from((0x0F, 0x8F))), 0)) + _be16(et) + body


@st.composite
def captures(draw: st.DrawFn, max_packets: int = 30) -> tuple[int, list[tuple[int, bytes, int]]]:
    """(link type, records) of a small capture: frames of one link type, all cut by the
    capture's snaplen (when it has one) and now and then one cut at a random length;
    the wire length is sometimes 4 bytes longer (an FCS not kept)."""
    linktype = draw(st.sampled_from(CAPTURE_LINKTYPES))
    snaplen = draw(st.sampled_from((None,) * 5 + (40, 54, 64, 68, 96)))
    out = []
    ts = 1_428_312_600 * 1_000_000_000
    for _ in range(draw(st.integers(1, max_packets))):
        ts += draw(st.integers(0, 10_000_000))
        frame = draw(link_frames(linktype))
        orig = len(frame) + draw(st.sampled_from((0, 0, 0, 4)))
        cut = snaplen
        if draw(st.sampled_from((False,) * 7 + (True,))):
            cut = draw(st.integers(0, len(frame)))
        out.append((ts, frame if cut is None else frame[:cut], orig))
    return linktype, out
