"""The real Skype captures of the corpus under ``rules/teams.toml``.

What they hold (read with tshark): ``skype.pcap`` is a consumer Skype client of about
2013 on a Mac. Its TCP connections to Microsoft servers come from OS-chosen ports that
fall in the QoS client ranges 50020-50059 (so the port rules call them video and
sharing, as they would on any network), three TLS connections name ``apps.skype.com``
and ``apps.skypeassets.com``, and its UDP goes peer to peer from port 13021. The
conference call in ``skype-conference-call.pcap`` is STUN-framed media between
192.168.2.20:49282 and a relay at 104.46.40.49:60642, an Azure address outside every
range Microsoft publishes for Teams media and on no Teams port, so by the published
facts it is not recognisable as Teams media and stays ``other``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from classifier import analyze

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
    assert counts(corpus_dir / "o365" / "skype-conference-call.pcap") == {"other": 200}


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
