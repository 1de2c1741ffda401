"""The real Skype captures of the corpus under ``rules/teams.toml``.

What they hold (read with tshark): ``skype.pcap`` is a consumer Skype client of about
2013 on a Mac. Its TCP connections to Microsoft servers come from OS-chosen ports that
fall in the QoS client ranges 50020-50059 (so the port rules call them video and
sharing, as they would on any network), three TLS connections name ``apps.skype.com``
and ``apps.skypeassets.com``, and its UDP goes peer to peer from port 13021 in
messages of 26 to 42 bytes: the P2P network's probes, no call. The conference call in
``skype-conference-call.pcap`` is media between 192.168.2.20:49282 and a relay at
104.46.40.49:60642, an Azure address outside every range Microsoft publishes for
Teams media and on no Teams port; it opens with ICE connectivity checks carrying
MS-CANDIDATE-IDENTIFIER and MS-IMPLEMENTATION-VERSION, so the ``ms-stun`` signature
makes the whole flow ``media``. nDPI's ``stun.pcap`` holds the same kind of checks over
TCP (RFC 4571 framing) between two private addresses, and WebRTC, Zoom and Google
STUN that must stay apart.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from classifier import analyze
from classifier.names import MS_STUN_ATTRIBUTES
from classifier.rules import parse_rules

pytestmark = pytest.mark.corpus

ROOT = Path(__file__).resolve().parent.parent
TEAMS = ROOT / "rules" / "teams.toml"


def counts(path: Path) -> dict[str, int]:
    result = analyze(str(path), rules=TEAMS, jobs=1)
    assert result.totals.packets == sum(c.packets for c in result.categories.values())
    return {k: v.packets for k, v in result.categories.items() if v.packets}


def test_skype_capture_under_teams_rules(corpus_dir: Path) -> None:
    assert counts(corpus_dir / "o365" / "skype.pcap") == {
        "video": 500,  # TCP from client ports 50020-50039 (the QoS video range)
        "desktop-sharing": 89,  # TCP from client ports 50040-50059
        "teams-web": 15,  # the apps.skype.com connection from port 50090, handshake included
        "quic": 2,
        "https": 346,
        "other": 2117,
        "non-ip": 215,
    }


def test_conference_call_under_teams_rules(corpus_dir: Path) -> None:
    assert counts(corpus_dir / "o365" / "skype-conference-call.pcap") == {"media": 200}


def test_ndpi_stun_capture_under_teams_rules(corpus_dir: Path) -> None:
    path = corpus_dir / "ndpi" / "stun.pcap"
    if not path.exists():
        pytest.skip("nDPI's stun.pcap is not in the corpus")
    assert counts(path) == {
        "media": 101,  # 86 to relay port 3478, 15 of the framed TCP checks (handshake on)
        "other": 100,  # WebRTC, Google and Zoom STUN, and the rest
    }


#: Microsoft's STUN attribute types, as a tshark display filter set.
MS_TYPES = "{" + ",".join(f"0x{t:04x}" for t in sorted(MS_STUN_ATTRIBUTES)) + "}"
SIGNED = {"name": "signed", "rule": [{
    "name": "ms-stun", "protocols": ["udp", "tcp"], "client": {"udp": ["any"], "tcp": ["any"]},
    "server": {"udp": ["any"], "tcp": ["any"]}, "signatures": ["ms-stun"]}]}


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("name", [
    "o365/skype-conference-call.pcap", "ndpi/stun.pcap", "ndpi/stun_dtls_rtp.pcapng",
    "ndpi/stun_zoom.pcapng", "ndpi/stun_tcp_multiple_msgs_same_pkt.pcap",
    "ndpi/stun_classic.pcap", "ndpi/webex.pcap", "ndpi/whatsapp.pcap"])
def test_signature_agrees_with_tshark(corpus_dir: Path, name: str) -> None:
    """The packets the signature claims are exactly those of the UDP and TCP streams
    whose first payload tshark decodes as STUN with one of Microsoft's attributes."""
    path = corpus_dir / name
    if not path.exists():
        pytest.skip(f"{name} is not in the corpus")
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "udp.stream", "-e", "tcp.stream",
         "-e", "udp.length", "-e", "tcp.len", "-e", "stun.att.type"],
        capture_output=True, text=True, check=True).stdout
    frames: dict[str, int] = {}
    first: dict[str, bool] = {}
    for line in out.splitlines():
        udp, tcp, ulen, tlen, types = (line.split("\t") + [""] * 5)[:5]
        if not (udp or tcp):
            continue
        stream = f"u{udp}" if udp else f"t{tcp}"
        frames[stream] = frames.get(stream, 0) + 1
        payload = int(ulen.split(",")[0]) > 8 if udp else int(tlen or 0) > 0
        if payload and stream not in first:
            first[stream] = bool(types) and bool(
                {int(t, 16) for t in types.split(",")} & MS_STUN_ATTRIBUTES)
    expected = sum(frames[s] for s, signed in first.items() if signed)
    result = analyze(str(path), rules=parse_rules(SIGNED), jobs=1)
    assert result.categories["ms-stun"].packets == expected
    if name.startswith("o365/") or name == "ndpi/stun.pcap":
        assert expected > 0


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_skype_names_agree_with_tshark(corpus_dir: Path) -> None:
    """The packets named Teams/Skype web are exactly the packets of the TCP streams
    whose ClientHello tshark reads a Skype name from (outside the QoS port ranges,
    which come first in the rule set)."""
    path = corpus_dir / "o365" / "skype.pcap"
    fields = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "tls.handshake.extensions_server_name",
         "-T", "fields", "-e", "tcp.stream", "-e", "tls.handshake.extensions_server_name",
         "-e", "tcp.srcport"], capture_output=True, text=True, check=True).stdout
    streams = [line.split("\t")[0] for line in fields.splitlines()
               if line.split("\t")[1].endswith((".skype.com", ".skypeassets.com"))
               and not 50000 <= int(line.split("\t")[2]) <= 50059]
    assert streams
    expected = 0
    for s in streams:
        out = subprocess.run(["tshark", "-r", str(path), "-Y", f"tcp.stream=={s}", "-T",
                              "fields", "-e", "frame.number"], capture_output=True, text=True,
                             check=True).stdout
        expected += len(out.split())
    assert counts(path)["teams-web"] == expected
