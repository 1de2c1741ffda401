"""Server names agree with tshark on the real captures of the corpus: every TLS
ClientHello to TCP 443 that tshark reads a server name from names that flow in our
flow records (rules that use names: ``office365-services``), and every other name we
give a flow came from a DNS answer in the same capture."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from classifier import analyze
from classifier.flows import Flows, flow_columns
from classifier.pipeline import Options
from classifier.rules import load_rules

pytestmark = [pytest.mark.corpus,
              pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")]

#: Captures where tshark reads names we do not, and why.
NOT_SEEN = {
    # The TLS flows are inside tunnels, which we classify by their outer header.
    "capwap_data.pcapng": "CAPWAP tunnel",
    "vxlan.pcap": "VXLAN tunnel",
    "tls_invalid_reads.pcap": "GTP-U tunnel",
    # From client ports in the QoS video range: the port rule comes before any name.
    "skype.pcap": "QoS client ports",
}

Hello = tuple[str, int, str, str]  # client address, client port, server address, name


def tshark_fields(path: Path, display: str, *fields: str) -> list[list[str]]:
    args = ["tshark", "-r", str(path), "-Y", display, "-T", "fields"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300).stdout
    return [line.split("\t") for line in out.splitlines()]


def _address(text: str) -> str:
    return str(ipaddress.ip_address(text.split(",")[0]))


def tshark_hellos(path: Path) -> set[Hello]:
    rows = tshark_fields(path, "tls.handshake.type == 1 && tcp.dstport == 443", "ip.src",
                         "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst",
                         "tls.handshake.extensions_server_name")
    return {(_address(v[0] or v[1]), int(v[2].split(",")[0]), _address(v[3] or v[4]),
             v[5].split(",")[0].lower()) for v in rows if len(v) == 6 and v[5]}


def our_names(path: Path) -> set[Hello]:
    rules = load_rules("office365-services")
    got: set[Hello] = set()

    def sink(flows: Flows) -> None:
        c = flow_columns(flows, rules.categories)
        for i in range(len(flows)):
            if c["protocol"][i] == 6 and c["server_port"][i] == 443 and c["server_name"][i]:
                got.add((str(c["client_addr"][i]), int(str(c["client_port"][i])),
                         str(c["server_addr"][i]), str(c["server_name"][i])))

    analyze(str(path), rules=rules, jobs=1, options=Options(flow_sink=sink))
    return got


def test_names_agree_with_tshark(corpus_dir: Path) -> None:
    captures = sorted(p for p in corpus_dir.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    checked = 0
    for path in captures:
        want = tshark_hellos(path)
        if not want:
            continue
        got = our_names(path)
        if path.name in NOT_SEEN:
            assert not want <= got, (path.name, NOT_SEEN[path.name])
        else:
            assert want <= got, (path.name, sorted(want - got)[:5])
            checked += len(want)
        extra = {name for *_, name in got - want}
        if extra:  # named from DNS answers, which tshark reads too
            answered = {n.lower() for row in tshark_fields(
                path, "dns.flags.response == 1", "dns.qry.name") for n in row[0].split(",")}
            assert extra <= answered, (path.name, sorted(extra - answered)[:5])
    assert checked >= 400  # the corpus holds over 400 such ClientHellos
