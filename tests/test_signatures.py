"""The ``ms-stun`` payload signature: flows that open with Microsoft's STUN extensions.

Messages are built here byte by byte after RFC 8489 (header: type, length, magic
cookie, transaction id; attributes: type, length, value padded to four bytes), so
what each one carries is known by construction.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("scapy")
from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw, raw

from classifier import analyze
from classifier.errors import RulesError
from classifier.names import MS_STUN_ATTRIBUTES, ms_stun
from classifier.rules import load_rules, parse_rules

from .test_names import CLIENT, Capture, got, read_with
from .writers import pcap

ROOT = Path(__file__).resolve().parent.parent
TEAMS = ROOT / "rules" / "teams.toml"
COOKIE = 0x2112A442
MS_IMPLEMENTATION_VERSION = 0x8070
MS_CANDIDATE_IDENTIFIER = 0x8054
GOOG_NETWORK_INFO = 0xC057
SOFTWARE = 0x8022


def attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\x00" * (-len(value) % 4)


def stun(*attrs: bytes, kind: int = 0x0001, cookie: bool = True) -> bytes:
    """A STUN message (default: a Binding Request) with these attributes."""
    body = b"".join(attrs)
    head = struct.pack("!HH", kind, len(body))
    head += struct.pack("!I", COOKIE) + bytes(range(12)) if cookie else bytes(range(16))
    return head + body


def ms_request() -> bytes:
    """A connectivity check as Skype for Business and Teams send it."""
    return stun(attr(0x0006, b"abcd:efgh"), attr(0x0024, b"\x6e\x00\x01\xff"),
                attr(MS_CANDIDATE_IDENTIFIER, b"\x02"),
                attr(MS_IMPLEMENTATION_VERSION, b"\x00\x00\x00\x03"),
                attr(0x0008, b"\x11" * 20), attr(0x8028, b"\x22" * 4))


def webrtc_request() -> bytes:
    """A browser's connectivity check: standard and Google attributes only."""
    return stun(attr(0x0006, b"abcd:efgh"), attr(GOOG_NETWORK_INFO, b"\x00\x01\x00\x0a"),
                attr(0x0024, b"\x6e\x00\x01\xff"), attr(0x0008, b"\x11" * 20),
                attr(0x8028, b"\x22" * 4))


# ---- the parser -------------------------------------------------------------------


def test_ms_attributes_are_recognised() -> None:
    m = ms_request()
    assert ms_stun(m, len(m))
    for kind in sorted(MS_STUN_ATTRIBUTES):
        one = stun(attr(kind, b"\x00\x00\x00\x02"))
        assert ms_stun(one, len(one)), hex(kind)
    # Responses and TURN methods too; the classic format (no magic cookie) of
    # MS-TURN's first versions as well.
    for kind in (0x0101, 0x0111, 0x0003, 0x0004, 0x0016):
        one = stun(attr(0x8008, b"\x00\x00\x00\x01"), kind=kind)
        assert ms_stun(one, len(one)), hex(kind)
    classic = stun(attr(0x8008, b"\x00\x00\x00\x01"), cookie=False)
    assert ms_stun(classic, len(classic))


def test_other_stun_and_non_stun_are_not() -> None:
    w = webrtc_request()
    assert not ms_stun(w, len(w))
    for kind in (0x8022, 0x8028, 0x8029, 0x802A, 0x8020, 0x8053, 0x8063, 0x80FF, 0xC057):
        one = stun(attr(kind, b"\x00\x00\x00\x02"))
        assert not ms_stun(one, len(one)), hex(kind)
    m = ms_request()
    assert not ms_stun(m, len(m) + 4)  # the length field must be the datagram's
    assert not ms_stun(m[:-4], len(m) - 4)
    assert not ms_stun(b"\x80" + m[1:], len(m))  # RTP's first bits
    assert not ms_stun(b"\x40" + m[1:], len(m))  # a ChannelData message
    bad_method = stun(attr(0x8008, b"\x00\x00\x00\x01"), kind=0x000D)
    assert not ms_stun(bad_method, len(bad_method))
    odd = bytearray(m)
    odd[3] -= 2  # a length that is not a multiple of four
    assert not ms_stun(bytes(odd), len(m) - 2)
    assert not ms_stun(b"", 0) and not ms_stun(m[:19], 19)


def test_attributes_are_walked_not_searched() -> None:
    """An MS attribute type inside another attribute's value is not an attribute."""
    hidden = stun(attr(SOFTWARE, struct.pack("!HH", MS_IMPLEMENTATION_VERSION, 4) + b"abcd"))
    assert not ms_stun(hidden, len(hidden))
    after = stun(attr(SOFTWARE, b"x" * 5), attr(MS_IMPLEMENTATION_VERSION, b"\0\0\0\3"))
    assert ms_stun(after, len(after))  # found past a padded value


def test_only_captured_attributes_are_seen() -> None:
    m = ms_request()
    at = m.index(struct.pack("!H", MS_CANDIDATE_IDENTIFIER))
    assert ms_stun(m[: at + 4], len(m))  # the attribute's header was captured
    assert not ms_stun(m[:at], len(m))  # cut before it (a snaplen): not seen


def test_tcp_framing() -> None:
    m = ms_request()
    framed = struct.pack("!H", len(m)) + m
    assert ms_stun(framed, len(framed), framed=True)
    assert ms_stun(framed + framed, 2 * len(framed), framed=True)  # two in a segment
    assert not ms_stun(m, len(m), framed=True)
    assert not ms_stun(framed, len(framed) - 1, framed=True)  # the frame goes on
    assert not ms_stun(framed, len(framed))  # framed bytes are not a datagram
    w = webrtc_request()
    assert not ms_stun(struct.pack("!H", len(w)) + w, len(w) + 2, framed=True)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 400), st.integers(0, 200), st.binary(max_size=6),
       st.booleans())
def test_never_raises(noise: bytes, length: int, cut: int, patch: bytes, framed: bool) -> None:
    m = ms_request()
    for data in (noise, m[:cut], m[:cut] + patch + m[cut + len(patch):]):
        assert ms_stun(data, length, framed=framed) in (True, False)


# ---- rules ------------------------------------------------------------------------

RULE = {"name": "s", "protocols": ["udp"], "client": {"udp": ["any"]},
        "server": {"udp": ["any"]}}


def test_rules_take_known_signatures_only() -> None:
    rules = parse_rules({"rule": [{**RULE, "signatures": ["ms-stun", "ms-stun"]}]})
    assert rules.rules[0].signatures == ("ms-stun",)
    assert rules.uses_names
    assert rules.classify_one(17, 5000, 6000, signature="ms-stun") == "s"
    assert rules.classify_one(17, 5000, 6000) == "other"
    for bad in (["webrtc"], "ms-stun", [1], ["MS-STUN"]):
        with pytest.raises(RulesError, match=r"bad signature .* in 'signatures'"):
            parse_rules({"rule": [{**RULE, "signatures": bad}]})


def test_shipped_teams_rules_ask_for_it() -> None:
    rules = load_rules(TEAMS)
    signed = [r for r in rules.rules if r.signatures]
    assert [r.name for r in signed] == ["ms-stun-media"]
    # Address and port rules still come first: a relay port keeps its modality hint.
    assert rules.classify_one(17, 50000, 3479, signature="ms-stun") == "audio"
    assert rules.classify_one(17, 40000, 60642, signature="ms-stun") == "media"
    assert rules.classify_one(17, 40000, 60642) == "other"
    assert rules.classify_one(6, 40000, 42000, signature="ms-stun") == "media"


# ---- captures ---------------------------------------------------------------------


def udp_flow(cap: Capture, server: str, cport: int, sport: int, first: bytes,
             category: str, *, media: int = 4) -> None:
    ip = IPv6 if ":" in server else IP
    client = "fd00::10" if ":" in server else CLIENT
    up = Ether() / ip(src=client, dst=server) / UDP(sport=cport, dport=sport)
    down = Ether() / ip(src=server, dst=client) / UDP(sport=sport, dport=cport)
    cap.add(up / Raw(first), category)
    for n in range(media):  # SRTP: version 2 RTP headers, then noise
        cap.add((down if n % 2 else up) / Raw(b"\x80\x6f" + bytes([n]) * 160), category)


def framed_tcp_flow(cap: Capture, server: str, cport: int, sport: int, first: bytes,
                    category: str) -> None:
    up = Ether() / IP(src=CLIENT, dst=server)
    down = Ether() / IP(src=server, dst=CLIENT)
    cap.add(up / TCP(sport=cport, dport=sport, flags="S"), category)
    cap.add(down / TCP(sport=sport, dport=cport, flags="SA"), category)
    cap.add(up / TCP(sport=cport, dport=sport, flags="A"), category)
    cap.add(up / TCP(sport=cport, dport=sport, flags="PA")
            / Raw(struct.pack("!H", len(first)) + first), category)
    cap.add(down / TCP(sport=sport, dport=cport, flags="PA") / Raw(b"\x00\x40" + b"y" * 64),
            category)


def signature_capture() -> Capture:
    cap = Capture()
    udp_flow(cap, "104.46.40.49", 49282, 60642, ms_request(), "media")
    udp_flow(cap, "2001:db8::49", 49283, 3000, ms_request(), "media")
    udp_flow(cap, "104.46.40.50", 49284, 60642, webrtc_request(), "other")
    # Begins mid-call (media first): decided at the first packet, no signature.
    cap.add(Ether() / IP(src=CLIENT, dst="104.46.40.51") / UDP(sport=49285, dport=60642)
            / Raw(b"\x80\x6f" + b"z" * 100), "other")
    cap.add(Ether() / IP(src=CLIENT, dst="104.46.40.51") / UDP(sport=49285, dport=60642)
            / Raw(ms_request()), "other")
    # The relay port's hint wins over the signature (an earlier rule).
    udp_flow(cap, "52.113.1.1", 50000, 3479, ms_request(), "audio")
    framed_tcp_flow(cap, "10.206.50.239", 41588, 42000, ms_request(), "media")
    framed_tcp_flow(cap, "10.206.50.240", 41589, 42000, webrtc_request(), "other")
    # A TCP payload starting with a small byte that is not STUN.
    framed_tcp_flow(cap, "10.206.50.241", 41590, 42000, b"\x01\x02\x03", "other")
    return cap


@pytest.mark.parametrize("batch_bytes", [None, 300])
@pytest.mark.parametrize("compiled", ["0", "1"])
def test_flows_by_signature_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  batch_bytes: int | None, compiled: str) -> None:
    """Every packet of a flow that opens with Microsoft's STUN extensions is media,
    the TCP handshake included; other STUN, and flows that open otherwise, are not."""
    read_with(monkeypatch, batch_bytes=batch_bytes, compiled=compiled)
    cap = signature_capture()
    path = cap.write(tmp_path / "stun.pcap")
    result = analyze(str(path), rules=TEAMS, jobs=1)
    assert got(result) == cap.totals()


def test_signature_needs_the_rule(tmp_path: Path) -> None:
    """Without a rule asking for it, nothing is checked: the same flows are other."""
    cap = signature_capture()
    path = cap.write(tmp_path / "stun.pcap")
    rules = load_rules(TEAMS)
    kept = tuple(r for r in rules.rules if not r.signatures)
    from dataclasses import replace

    result = analyze(str(path), rules=replace(rules, rules=kept), jobs=1)
    media = got(result).get("media", (0, 0))[0]
    assert media == 0


@pytest.mark.parametrize("seen", [False, True])
def test_snaplen_cut_messages(tmp_path: Path, seen: bool) -> None:
    """In a headers-only capture, an MS attribute past the snaplen is not seen; one
    whose header was captured is."""
    at = ms_request().index(struct.pack("!H", MS_CANDIDATE_IDENTIFIER))
    snaplen = 14 + 20 + 8 + at + (4 if seen else 0)
    cap = Capture()
    udp_flow(cap, "104.46.40.49", 49282, 60642, ms_request(), "media" if seen else "other")
    cut = tmp_path / "cut.pcap"
    records = [(int(pkt.time * 1e9), raw(pkt)[:snaplen], len(raw(pkt)))
               for pkt in cap.packets]
    cut.write_bytes(pcap(records, snaplen=snaplen))
    result: Any = analyze(str(cut), rules=TEAMS, jobs=1)
    assert {k: v.packets for k, v in result.categories.items() if v.packets} == {
        "media" if seen else "other": 5}
