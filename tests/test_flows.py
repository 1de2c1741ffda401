"""Flows: records, client ends, output files, and the bounded table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

import classifier
from classifier.pipeline import Options
from tests import writers
from tests.conftest import CORPUS


def _pcap(tmp_path: Path, pkts: list[object], name: str = "f.pcap") -> Path:
    recs = [(10**18 + i * 10**6, bytes(p), len(bytes(p))) for i, p in  # type: ignore[call-overload]
            enumerate(pkts)]
    path = tmp_path / name
    path.write_bytes(writers.pcap(recs))
    return path


def _flows_csv(path: Path, tmp_path: Path, *extra: str) -> pd.DataFrame:
    out = tmp_path / "flows.csv"
    proc = subprocess.run([sys.executable, "-m", "classifier", "analyze", "-q", "--format",
                           "json", "--flows", str(out), *extra, str(path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return pd.read_csv(out)


def test_client_end_is_the_rules_then_the_syn_sender_then_the_higher_port(
        tmp_path: Path) -> None:
    pkts = [
        # The rule's client side (audio 50000-50019 to 3478), first seen from the server.
        Ether() / IP(src="52.112.0.1", dst="10.0.0.2") / UDP(sport=3478, dport=50001),
        Ether() / IP(src="10.0.0.2", dst="52.112.0.1") / UDP(sport=50001, dport=3478),
        # No rule: the SYN's sender, although its port is lower.
        Ether() / IP(src="10.0.0.3", dst="10.0.0.4") / TCP(sport=1000, dport=40000, flags="S"),
        Ether() / IP(src="10.0.0.4", dst="10.0.0.3") / TCP(sport=40000, dport=1000, flags="SA"),
        # No rule, no SYN: the higher port.
        Ether() / IP(src="10.0.0.5", dst="10.0.0.6") / UDP(sport=7000, dport=60000),
    ]
    df = _flows_csv(_pcap(tmp_path, pkts), tmp_path).set_index("client_addr")
    assert df.loc["10.0.0.2", "client_port"] == 50001
    assert df.loc["10.0.0.2", "category"] == "audio"
    assert (df.loc["10.0.0.2", "packets_up"], df.loc["10.0.0.2", "packets_down"]) == (1, 1)
    assert df.loc["10.0.0.3", "server_port"] == 40000
    assert df.loc["10.0.0.6", "client_port"] == 60000
    assert len(df) == 3


def test_flow_files_read_back_with_types(tmp_path: Path, pcaps_dir: Path) -> None:
    mix = pcaps_dir / "office365-mix.pcap"
    out = tmp_path / "flows.parquet"
    series = tmp_path / "series.parquet"
    proc = subprocess.run([sys.executable, "-m", "classifier", "analyze", "-q", "--format",
                           "json", "--interval", "1s", "--flows", str(out), "--series",
                           str(series), str(mix)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out)
    assert str(table.schema.field("first_ts").type) == "timestamp[ns, tz=UTC]"
    assert str(table.schema.field("client_port").type) == "uint16"
    df = table.to_pandas()
    doc = classifier.analyze(str(mix)).to_dict()
    ip_bytes = doc["totals"]["bytes"] - doc["categories"]["non-ip"]["bytes"]
    assert int(df.bytes_up.sum() + df.bytes_down.sum()) == ip_bytes
    assert len(df) == doc["flows_summary"]["flows"]
    per_cat = df.groupby("category").apply(lambda g: int(g.bytes_up.sum() + g.bytes_down.sum()),
                                           include_groups=False)
    for cat, nbytes in per_cat.items():
        assert nbytes == doc["categories"][cat]["bytes"]
    s = pd.read_parquet(series)
    assert list(s.columns) == ["interval_start", "category", "direction", "packets", "bytes",
                               "active_flows"]
    assert int(s.bytes.sum()) == doc["totals"]["bytes"]
    assert str(s.interval_start.dtype) == "datetime64[ns, UTC]"


def test_a_scan_of_one_packet_flows_stays_bounded(tmp_path: Path) -> None:
    """5,000 one-packet flows through a table of 64: flushed, never dropped."""
    base = bytes(Ether() / IP(src="10.1.0.1", dst="52.0.0.1") / TCP(sport=1, dport=1))
    recs = []
    for i in range(5000):
        raw = bytearray(base)
        raw[34:36] = (1024 + i).to_bytes(2, "big")  # a new source port each time
        recs.append((10**18 + i * 10**6, bytes(raw), len(raw)))
    path = tmp_path / "scan.pcap"
    path.write_bytes(writers.pcap(recs))
    opts = Options(max_flows=64)
    doc = classifier.analyze(str(path), options=opts).to_dict()
    assert doc["flows_summary"]["flows"] == 5000
    assert doc["flows_summary"]["evicted"] >= 5000 - 64
    assert doc["totals"]["packets"] == 5000
    df = _flows_csv(path, tmp_path, "--max-flows", "64")
    assert len(df) == 5000 and int(df.packets_up.sum() + df.packets_down.sum()) == 5000


def test_idle_flows_are_flushed(tmp_path: Path) -> None:
    a = Ether() / IP(src="10.0.0.1", dst="8.8.8.8") / UDP(sport=5000, dport=53)
    recs = [(10**18 + k * 10**9 * 60, bytes(a), len(bytes(a))) for k in range(4)]
    path = tmp_path / "idle.pcap"
    path.write_bytes(writers.pcap(recs))
    doc = classifier.analyze(str(path), options=Options(idle_timeout_ns=30 * 10**9)).to_dict()
    # One flow, idle 60 s between packets: flushed and created again each time.
    assert doc["flows_summary"]["flows"] == 4
    assert doc["flows_summary"]["evicted"] >= 2


def _flow_bytes(doc: dict[str, object]) -> None:
    cats = doc["categories"]  # type: ignore[index]
    ip_bytes = sum(v["bytes"] for k, v in cats.items() if k != "non-ip")  # type: ignore[union-attr]
    dirs = doc["directions"]  # type: ignore[index]
    assert sum(d["bytes"] for c in dirs.values() for d in c.values()) == \
        doc["totals"]["bytes"]  # type: ignore[index]
    assert ip_bytes >= 0


@pytest.mark.parametrize("name", ["office365-mix.pcap", "ipv4.pcap", "ipv6.pcap",
                                  "multi-section.pcapng", "snaplen-cut.pcap"])
def test_flow_totals_equal_category_totals(pcaps_dir: Path, name: str) -> None:
    result = classifier.analyze(str(pcaps_dir / name), options=Options(flow_sink=_Collect()))
    doc = result.to_dict()
    _flow_bytes(doc)


class _Collect:
    """A flow sink keeping every record."""

    def __init__(self) -> None:
        self.up = 0
        self.down = 0

    def __call__(self, flows: object) -> None:
        st = flows.stats  # type: ignore[attr-defined]
        self.up += int(st[:, 3].sum())
        self.down += int(st[:, 5].sum())


@pytest.mark.corpus
@pytest.mark.skipif(not CORPUS.is_dir(), reason="real-capture corpus absent")
def test_flow_bytes_add_up_on_the_corpus() -> None:
    files = sorted(p for p in CORPUS.rglob("*") if p.suffix in {".pcap", ".pcapng", ".cap"}
                   and p.stat().st_size > 0)
    for path in files:
        sink = _Collect()
        doc = classifier.analyze(str(path), options=Options(flow_sink=sink)).to_dict()
        cats = doc["categories"]
        ip_bytes = doc["totals"]["bytes"] - cats["non-ip"]["bytes"]
        assert sink.up + sink.down == ip_bytes, path.name
        dirs = doc["directions"]
        assert sum(d["bytes"] for c in dirs.values() for d in c.values()) == \
            doc["totals"]["bytes"], path.name
        assert np.isfinite(doc["rates"]["categories"]["other"]["upload"]["p95_bps"])
