"""Server names learned from the traffic: SNI, HTTP Host, DNS; rules that use them.

The captures are built here with scapy, flow by flow, so the category of every packet
is known by construction: a flow takes the category its server name gives, from its
first packet (the handshake before the ClientHello included) to its last.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("scapy")
from scapy.all import IP, TCP, UDP, Ether, IPv6, Padding, Raw, raw, wrpcap
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.tls.all import (
    TLS,
    ServerName,
    TLS_Ext_ServerName,
    TLS_Ext_SupportedGroups,
    TLSClientHello,
)

from classifier import analyze
from classifier.names import MAX_NAME, NEED_MORE, dns_answers, http_host, tls_sni
from classifier.pipeline import Options

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "rules" / "office365-services.toml"
CLIENT, CLIENT6 = "192.168.1.10", "fd00::10"


def hello(name: bytes | None, *, pad: int = 0) -> bytes:
    """A TLS ClientHello record naming ``name`` (``pad`` bytes of extra extension
    first, to make it span segments)."""
    ext: list[Any] = []
    if pad:
        ext.append(TLS_Ext_SupportedGroups(groups=[23] * (pad // 2)))
    if name is not None:
        ext.append(TLS_Ext_ServerName(servernames=[ServerName(servername=name)]))
    return raw(TLS(msg=[TLSClientHello(ext=ext)]))


class Capture:
    """Packets written in order, each with its expected category."""

    def __init__(self) -> None:
        self.packets: list[Any] = []
        self.expected: list[str] = []
        self.t = 1_700_000_000.0

    def add(self, pkt: Any, category: str) -> None:
        self.t += 0.001
        pkt.time = self.t
        self.packets.append(pkt)
        self.expected.append(category)

    def tcp_flow(self, server: str, sport: int, payload: bytes | list[bytes], category: str,
                 *, cport: int = 40000, replies: int = 2, pad_ack: bool = False) -> None:
        v6 = ":" in server
        ip = (lambda s, d: IPv6(src=s, dst=d)) if v6 else (lambda s, d: IP(src=s, dst=d))
        c = CLIENT6 if v6 else CLIENT
        up = Ether() / ip(c, server)
        down = Ether() / ip(server, c)
        self.add(up / TCP(sport=cport, dport=sport, flags="S"), category)
        self.add(down / TCP(sport=sport, dport=cport, flags="SA"), category)
        ack = up / TCP(sport=cport, dport=sport, flags="A")
        self.add(ack / Padding(b"\x00" * 6) if pad_ack else ack, category)
        for seg in payload if isinstance(payload, list) else [payload]:
            self.add(up / TCP(sport=cport, dport=sport, flags="PA") / Raw(seg), category)
        for n in range(replies):
            self.add(down / TCP(sport=sport, dport=cport, flags="PA") / Raw(b"x" * (100 + n)),
                     category)
        self.add(up / TCP(sport=cport, dport=sport, flags="FA"), category)

    def interleave(self, flows: list[list[tuple[Any, str]]]) -> None:
        """Packets of several flows, round robin."""
        while any(flows):
            for f in flows:
                if f:
                    self.add(*f.pop(0))

    def write(self, path: Path) -> Path:
        wrpcap(str(path), self.packets)
        return path

    def totals(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for pkt, cat in zip(self.packets, self.expected, strict=True):
            p, b = out.get(cat, (0, 0))
            out[cat] = (p + 1, b + len(raw(pkt)))
        return out


def got(result: Any) -> dict[str, tuple[int, int]]:
    return {k: (v.packets, v.bytes) for k, v in result.categories.items() if v.packets}


def read_with(monkeypatch: pytest.MonkeyPatch, *, batch_bytes: int | None = None,
              compiled: str = "0") -> None:
    """Read captures in batches of ``batch_bytes`` (tiny ones keep flows pending
    across batches), and with ``compiled`` "1" through the compiled kernels even when
    the capture is small."""
    if batch_bytes:
        import classifier.sources.pcap as pcap_reader

        monkeypatch.setattr(pcap_reader, "BATCH_BYTES", batch_bytes)
    if compiled == "1":
        import classifier.sources as sources

        monkeypatch.setattr(sources, "COMPILE_THRESHOLD", 0)


def dns_answer(qname: str, chain: list[str], addresses: list[str]) -> Any:
    answers = []
    owner = qname
    for target in chain:
        answers.append(DNSRR(rrname=owner, type="CNAME", rdata=target))
        owner = target
    for a in addresses:
        answers.append(DNSRR(rrname=owner, type="AAAA" if ":" in a else "A", rdata=a))
    return (Ether() / IP(src="192.168.1.1", dst=CLIENT) / UDP(sport=53, dport=33333)
            / DNS(id=7, qr=1, qd=DNSQR(qname=qname), an=answers))


# ---- parsers ----------------------------------------------------------------------


def test_sni_whole_and_in_pieces() -> None:
    msg = hello(b"sipdir.online.lync.com", pad=3000)
    assert len(msg) > 3000
    assert tls_sni(msg) == "sipdir.online.lync.com"
    assert tls_sni(msg[:1400]) == NEED_MORE  # the rest is in the next segment
    assert tls_sni(hello(None)) is None
    assert tls_sni(b"\x17\x03\x03\x00\x10" + b"a" * 16) is None  # application data
    assert tls_sni(b"SSH-2.0-OpenSSH") is None


def test_sni_across_tls_records() -> None:
    body = hello(b"webdir.online.lync.com")[5:]  # the handshake message
    a, b = body[:30], body[30:]
    two = (b"\x16\x03\x01" + len(a).to_bytes(2, "big") + a
           + b"\x16\x03\x01" + len(b).to_bytes(2, "big") + b)
    assert tls_sni(two) == "webdir.online.lync.com"


def test_http_host() -> None:
    assert http_host(b"GET / HTTP/1.1\r\nHost: Outlook.Office365.com:80\r\n\r\n") == \
        "outlook.office365.com"
    assert http_host(b"POST /x HTTP/1.1\r\nHOST:[2603:1063::1]:443\r\n\r\n") == "2603:1063::1"
    assert http_host(b"GET / HTTP/1.1\r\nUser-Agent: x\r\n") == NEED_MORE
    assert http_host(b"GET / HTTP/1.1\r\n\r\n") is None
    assert http_host(b"\x16\x03\x01") is None


def test_dns_cname_chain_and_both_families() -> None:
    msg = raw(dns_answer("teams.microsoft.com", ["teams.office.com", "x.trafficmanager.net"],
                         ["52.113.194.132", "2603:1063::1"])[DNS])
    got_ = dns_answers(msg)
    chain = ("teams.microsoft.com", "teams.office.com", "x.trafficmanager.net")
    assert got_ == [((0xFFFF << 32) | 0x3471C284, chain),
                    (0x26031063 << 96 | 1, chain)]


def test_dns_hostile_messages_give_nothing() -> None:
    header = b"\x00\x07\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
    loop = header + b"\xc0\x0c" + b"\x00\x01\x00\x01"  # a name that points at itself
    assert dns_answers(loop) == []
    assert dns_answers(header[:8]) == []
    query = b"\x00\x07\x01\x00" + header[4:]  # not a response
    assert dns_answers(query) == []


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 600), st.binary(max_size=8))
def test_parsers_never_raise_on_damage(noise: bytes, cut: int, patch: bytes) -> None:
    """Random bytes, and real messages cut or overwritten anywhere: never an
    exception, and any name is bounded printable text."""
    real = [hello(b"teams.microsoft.com"),
            raw(dns_answer("a.b", ["c.d"], ["10.0.0.1"])[DNS]),
            b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"]
    inputs = [noise] + [m[:cut] for m in real] + [
        m[:cut] + patch + m[cut + len(patch):] for m in real]
    for data in inputs:
        for name in (tls_sni(data), http_host(data)):
            assert name is None or name == NEED_MORE or (
                len(name) <= MAX_NAME and name.isascii() and name.isprintable())
        for address, chain in dns_answers(data):
            assert 0 <= address < 1 << 128
            assert all(len(n) <= MAX_NAME and n.isprintable() for n in chain)


# ---- classification by name ---------------------------------------------------------


def services_capture() -> Capture:
    cap = Capture()
    cap.tcp_flow("52.1.1.1", 443, hello(b"sipdir.online.lync.com"), "sip", pad_ack=True)
    cap.tcp_flow("52.1.1.2", 443, hello(b"pool7.infra.lync.com"), "psom", cport=40001)
    cap.tcp_flow("52.1.1.3", 443, hello(b"WEBDIR.online.lync.com"), "https-download",
                 cport=40002)
    cap.tcp_flow("93.184.216.34", 443, hello(b"www.example.org"), "not-office365",
                 cport=40003)
    cap.tcp_flow("20.1.1.1", 80,
                 b"GET /owa HTTP/1.1\r\nHost: outlook.office365.com\r\nAccept: */*\r\n\r\n",
                 "exchange", cport=40004)
    # Named by address only: Exchange's published prefix, whatever the SNI says.
    cap.tcp_flow("52.96.7.7", 443, hello(b"unrelated.example"), "exchange", cport=40005)
    # DNS names an address before a QUIC flow to it (and a TCP flow without SNI).
    cap.add(dns_answer("contoso.sharepoint.com", ["contoso.spo.trafficmanager.net"],
                       ["20.9.9.9", "2a01:111::9"]), "other")
    for n in range(3):
        cap.add(Ether() / IP(src=CLIENT, dst="20.9.9.9") / UDP(sport=50500, dport=443)
                / Raw(b"q" * (1200 - n)), "sharepoint")
    cap.tcp_flow("2a01:111::9", 443, b"\x00no tls here", "sharepoint", cport=40006)
    # The same kind of QUIC flow to an address nobody named.
    cap.add(Ether() / IP(src=CLIENT, dst="20.8.8.8") / UDP(sport=50501, dport=443)
            / Raw(b"q" * 1200), "not-office365")
    # A ClientHello in three segments, the name in the last.
    big = hello(b"teams.microsoft.com", pad=3000)
    cap.tcp_flow("52.1.1.9", 443, [big[:1400], big[1400:2800], big[2800:]], "teams",
                 cport=40007)
    # Seed port rules still apply first.
    cap.add(Ether() / IP(src=CLIENT, dst="52.1.1.1") / UDP(sport=50010, dport=3478)
            / Raw(b"a" * 160), "audio")
    return cap


@pytest.mark.parametrize("batch_bytes", [None, 300])
@pytest.mark.parametrize("compiled", ["0", "1"])
def test_categories_by_name_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  batch_bytes: int | None, compiled: str) -> None:
    """Every packet of every flow in the category its name or address gives, the
    handshake included; with tiny batches too (flows pending across batches)."""
    read_with(monkeypatch, batch_bytes=batch_bytes, compiled=compiled)
    cap = services_capture()
    path = cap.write(tmp_path / "services.pcap")
    result = analyze(str(path), rules=SERVICES, jobs=1)
    assert got(result) == cap.totals()


def interleaved_flows(n: int) -> Capture:
    """``n`` TLS flows to 443, named in turn sip, sharepoint and not-office365, their
    packets interleaved (every handshake waits while the others go on)."""
    names = [(b"sipdir.online.lync.com", "sip"), (b"contoso.sharepoint.com", "sharepoint"),
             (b"example.net", "not-office365")]
    parts = []
    for k in range(n):
        name, cat = names[k % 3]
        one = Capture()
        one.tcp_flow(f"52.1.2.{k}", 443, hello(name), cat, cport=41000 + k)
        parts.append(list(zip(one.packets, one.expected, strict=True)))
    cap = Capture()
    cap.interleave(parts)
    return cap


@pytest.mark.parametrize("compiled", ["0", "1"])
def test_a_table_that_grows_names_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           compiled: str) -> None:
    """The flow table starting at one row grows (rows kept, the batch resumed where
    it filled up) and names every flow as a large one does, in tiny and whole
    batches."""
    import classifier.naming as naming
    import classifier.sources.pcap as pcap_reader

    read_with(monkeypatch, compiled=compiled)
    # Twenty-four flows whose handshakes interleave: the table fills while they wait.
    cap = interleaved_flows(24)
    path = cap.write(tmp_path / "interleaved.pcap")
    monkeypatch.setattr(naming, "INITIAL_FLOWS", 1)
    grows: list[int] = []
    grown = naming._Table.grown

    def counted(self: object, capacity: int, compiled: bool) -> object:
        grows.append(capacity)
        return grown(self, capacity, compiled)  # type: ignore[arg-type]

    monkeypatch.setattr(naming._Table, "grown", counted)
    for batch_bytes in (300, 1 << 22):
        monkeypatch.setattr(pcap_reader, "BATCH_BYTES", batch_bytes)
        result = analyze(str(path), rules=SERVICES, jobs=1)
        assert got(result) == cap.totals()
    assert grows[:2] == [4, 16]  # it did grow, from one row


def test_interleaved_flows_and_flow_names(tmp_path: Path) -> None:
    """Flows whose handshakes interleave keep their own names; flow records carry them."""
    cap = interleaved_flows(3)
    path = cap.write(tmp_path / "interleaved.pcap")
    flows: list[Any] = []
    from classifier.flows import flow_columns
    from classifier.rules import load_rules

    rules = load_rules(SERVICES)
    result = analyze(str(path), rules=rules, jobs=1,
                     options=Options(flow_sink=lambda f: flows.append(
                         flow_columns(f, rules.categories))))
    assert got(result) == cap.totals()
    named = {(c["server_name"][i], c["category"][i]) for c in flows
             for i in range(len(c["category"]))}
    assert named == {("sipdir.online.lync.com", "sip"),
                     ("contoso.sharepoint.com", "sharepoint"), ("example.net", "not-office365")}


def test_flow_without_payload_is_decided_at_the_end(tmp_path: Path) -> None:
    """A handshake that never carries data: its packets are held, then counted."""
    cap = Capture()
    cap.add(Ether() / IP(src=CLIENT, dst="52.1.3.1") / TCP(sport=42000, dport=443, flags="S"),
            "not-office365")
    cap.add(Ether() / IP(src="52.1.3.1", dst=CLIENT) / TCP(sport=443, dport=42000, flags="SA"),
            "not-office365")
    cap.add(dns_answer("outlook.office.com", [], ["52.1.3.2"]), "other")
    cap.add(Ether() / IP(src=CLIENT, dst="52.1.3.2") / TCP(sport=42001, dport=443, flags="S"),
            "exchange")
    path = cap.write(tmp_path / "syn.pcap")
    assert got(analyze(str(path), rules=SERVICES, jobs=1)) == cap.totals()


@pytest.mark.parametrize("compiled", ["0", "1"])
def test_dns_names_only_flows_that_begin_after_the_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiled: str) -> None:
    """A UDP flow is decided at its first packet: an answer naming its server later in
    the same batch does not name it (its packets after the answer included), and a
    flow to the same server that begins after the answer is named. Many flows, so that
    the answers fall between the candidates of one batch."""
    read_with(monkeypatch, compiled=compiled)
    cap = Capture()

    def quic(server: str, sport: int, category: str) -> None:
        cap.add(Ether() / IP(src=CLIENT, dst=server) / UDP(sport=sport, dport=443)
                / Raw(b"q" * 1200), category)

    for n in range(40):
        early, late = f"20.7.{n}.1", f"20.7.{n}.2"
        quic(early, 51000 + n, "not-office365")  # begins before the answer
        quic(late, 52000 + n, "not-office365")
        if n % 3 == 0:
            cap.add(dns_answer(f"t{n}.sharepoint.com", [], [early, late]), "other")
            quic(early, 51000 + n, "not-office365")  # the same flow, after the answer
            quic(late, 53000 + n, "sharepoint")  # a new flow to it, after the answer
        else:
            quic(late, 53000 + n, "not-office365")
    path = cap.write(tmp_path / "dns-order.pcap")
    assert got(analyze(str(path), rules=SERVICES, jobs=1)) == cap.totals()


def test_hostile_names_are_bounded_and_escaped(tmp_path: Path) -> None:
    """Markup, control bytes, non-ASCII and overlong names never stop the analysis
    and come out bounded and escaped."""
    cap = Capture()
    hostile = [b"<script>alert(1)</script>.example", "\u00e9vil\u202e.example".encode(),
               b"a\x00b\r\nc.example", b"x" * 600, b""]
    for n, name in enumerate(hostile):
        cap.tcp_flow(f"93.1.1.{n}", 443, hello(name), "not-office365", cport=43000 + n)
    # Broken ClientHellos: lengths that lie, cut extensions.
    good = hello(b"sipdir.online.lync.com")
    broken = [good[:5] + b"\x01\xff\xff\xff" + good[9:], good[:60],
              good[:-3] + b"\xff\xff\xff", b"\x16\x03\x01\x00\x00"]
    for n, msg in enumerate(broken):
        cap.tcp_flow(f"93.1.2.{n}", 443, msg, "not-office365", cport=44000 + n)
    path = cap.write(tmp_path / "hostile.pcap")
    out = tmp_path / "flows.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "classifier", "analyze", "-q", "--rules", str(SERVICES),
         "--format", "json", "--flows", str(out), str(path)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    expected = cap.totals()
    assert {k: (v["packets"], v["bytes"]) for k, v in data["categories"].items()
            if v["packets"]} == expected
    with out.open(newline="") as fh:
        names = [row["server_name"] for row in csv.DictReader(fh)]
    assert "<script>alert(1)</script>.example" in names  # text, escaped by each output
    assert "\\xc3\\xa9vil\\xe2\\x80\\xae.example" in names
    assert "a\\x00b\\x0d\\x0ac.example" in names
    assert all(len(n) <= MAX_NAME and n.isprintable() and n.isascii() for n in names)
    assert ("x" * (MAX_NAME - 3) + "...") in names


def test_port_only_rules_learn_nothing(tmp_path: Path) -> None:
    """The default rule set uses no names: no naming stage, flows unnamed."""
    cap = services_capture()
    path = cap.write(tmp_path / "services.pcap")
    result = analyze(str(path), jobs=1)
    assert result.totals.packets == len(cap.packets)
    assert got(result)["https"][0] == sum(
        1 for p in cap.packets if TCP in p and 443 in (p[TCP].sport, p[TCP].dport))


def test_split_jobs_do_not_split_named_captures(tmp_path: Path) -> None:
    """Names are decided at a flow's start: with name rules a capture is not cut into
    byte ranges, so --jobs gives the sequential answer."""
    cap = services_capture()
    path = cap.write(tmp_path / "services.pcap")
    one = analyze(str(path), rules=SERVICES, jobs=1).to_dict()
    two = analyze(str(path), rules=SERVICES, jobs=2).to_dict()
    assert one == two


def test_decided_packets_match_plain_evaluation(tmp_path: Path) -> None:
    """Each flow's packets take ``RuleSet.classify_one`` with the flow's name."""
    from classifier.rules import load_rules

    rules = load_rules(SERVICES)
    cases = [("sipdir.online.lync.com", 443, "sip"), ("a.infra.lync.com", 443, "psom"),
             ("x.sharepoint.com", 443, "sharepoint"), ("nobody.example", 443, "not-office365"),
             ("sipfed.online.lync.com", 5061, "sip"), ("sipfed.online.lync.com", 5062, "other")]
    for name, port, cat in cases:
        assert rules.classify_one(6, 40000, port, 1, 2, name) == cat
    cap = Capture()
    for n, (name, port, cat) in enumerate(cases):
        cap.tcp_flow(f"93.2.2.{n}", port, hello(name.encode()), cat, cport=45000 + n)
    path = cap.write(tmp_path / "plain.pcap")
    assert got(analyze(str(path), rules=rules, jobs=1)) == cap.totals()


def test_array_of_names_bits() -> None:
    from classifier.lookup import compile_rules
    from classifier.rules import load_rules

    compiled = compile_rules(load_rules(SERVICES))
    names = [r.name for r in compiled.rules.rules]
    bits = compiled.name_bits("sipdir.online.lync.com")
    on = [names[r] for r in range(len(names)) if int(bits[r // 64]) >> (r % 64) & 1]
    assert on == ["sip", "teams"]
    assert not np.any(compiled.name_bits("example.org"))
