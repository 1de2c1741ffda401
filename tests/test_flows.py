"""Flows: records, client ends, output files, and the bounded table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

import classifier
import classifier.rules
from classifier.flows import (
    DSCP_SLOTS,
    K_A_HI,
    K_A_LO,
    K_B_HI,
    K_B_LO,
    K_PORTS,
    K_PROTO,
    N_STATS,
    S_CAT,
    S_CLIENT_A,
    S_PK_UP,
    Flows,
    FlowSummary,
)
from classifier.measures import EXPECTED_DSCP
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


# -- the QoS list: a total order, mergeable, records taken back ---------------------------


@st.composite
def _bad_records(draw: st.DrawFn) -> Flows:
    """Records of audio, video and other flows, few distinct addresses and packet
    counts (ties), IPv4 and IPv6 ends, DSCP marks right, missing or wrong."""
    n = draw(st.integers(0, 30))
    keys = np.zeros((n, 6), np.int64)
    stats = np.zeros((n, N_STATS), np.int64)
    dscp_val = np.zeros((n, DSCP_SLOTS), np.int8)
    dscp_cnt = np.zeros((n, DSCP_SLOTS), np.int64)
    v4 = 0xFFFF << 32
    for i in range(n):
        # 10.0.0.9 and 10.0.0.10, ports 9000 and 10000: their order as text is not
        # their order as numbers.
        ends = [draw(st.sampled_from([(0, v4 | 0x0A000009), (0, v4 | 0x0A00000A),
                                      (-(1 << 63), 5), (0x20010DB8 << 32, 1)]))
                for _ in range(2)]
        (keys[i, K_A_HI], keys[i, K_A_LO]), (keys[i, K_B_HI], keys[i, K_B_LO]) = ends
        keys[i, K_PORTS] = (draw(st.sampled_from([9000, 10000])) << 16) | 3478
        keys[i, K_PROTO] = draw(st.sampled_from([6, 17]))
        stats[i, S_CAT] = CATEGORIES.index(draw(st.sampled_from(
            ["audio", "video", "desktop-sharing", "https"])))
        stats[i, S_CLIENT_A] = draw(st.integers(0, 1))
        stats[i, S_PK_UP] = draw(st.integers(1, 2))
        for slot in range(draw(st.integers(1, 2))):
            dscp_val[i, slot] = draw(st.sampled_from([1, 47, 35, 19]))  # DSCP + 1
            dscp_cnt[i, slot] = draw(st.integers(1, 3))
    return Flows(keys, stats, dscp_val, dscp_cnt, [""])


CATEGORIES = classifier.rules.load_rules().categories


def _summary(keep: int) -> FlowSummary:
    return FlowSummary(CATEGORIES, EXPECTED_DSCP, keep=keep)


@settings(max_examples=200, deadline=None)
@given(_bad_records(), st.data(), st.integers(1, 4))
def test_the_qos_list_does_not_depend_on_how_records_came(
        records: Flows, data: st.DataObject, keep: int) -> None:
    """The worst flows listed are the same whether the records came at once, in
    batches, or in batches summed up in any order: the list's order is total."""
    whole = _summary(keep)
    whole.add(records, evicted=True)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(records)), max_size=4)))
    parts = [records.take(np.arange(a, b)) for a, b in
             zip([0, *cuts], [*cuts, len(records)], strict=True)]
    one = _summary(keep)
    for p in parts:
        one.add(p, evicted=True)
    sums = []
    for p in data.draw(st.permutations(parts)):
        s = _summary(keep)
        s.add(p, evicted=True)
        sums.append(s)
    total = sums[0] if sums else _summary(keep)
    for s in sums[1:]:
        total = total + s
    assert one.reported == whole.reported == total.reported
    assert len(whole.reported) == min(keep, int(whole.verdicts[:, 1:].sum()))
    assert (one.verdicts == whole.verdicts).all() and (total.verdicts == whole.verdicts).all()


@settings(max_examples=150, deadline=None)
@given(_bad_records(), st.data(), st.integers(0, 6))
def test_records_taken_back_leave_the_summary_of_the_others(
        records: Flows, data: st.DataObject, extra: int) -> None:
    """A summary keeping ``QOS_REPORTED + extra`` entries, ``QOS_REPORTED`` lowered to
    3: taking records back either leaves exactly the summary of the others, or says
    it cannot (the list was cut, and fewer than 3 entries are left)."""
    import classifier.flows

    gone = np.array(data.draw(st.lists(st.booleans(), min_size=len(records),
                                       max_size=len(records))), bool)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(classifier.flows, "QOS_REPORTED", 3)
        held = _summary(3 + extra)
        held.add(records, evicted=True)
        cut = held.cut
        exact = held.take_back(records.take(gone))
        others = _summary(3)
        others.add(records.take(~gone), evicted=True)
    assert exact == (not cut or len(held.reported) >= 3)
    if exact:
        shown = held + _summary(3)  # as the merge adds it to a result
        assert shown.reported == others.reported
        assert (shown.flows == others.flows).all() and (shown.verdicts == others.verdicts).all()
        assert shown.evicted == others.evicted


def test_records_tied_with_the_last_listed_are_told_apart_by_the_rest() -> None:
    """Two records of one flow with as many packets (pushed out of a full table, then
    seen again), one without its DSCP marking, one marked wrong: a list of one keeps
    the same of them whichever came first."""
    keys = np.zeros((2, 6), np.int64)
    keys[:, K_A_LO], keys[:, K_B_LO] = (0xFFFF << 32) | 0x0A000001, (0xFFFF << 32) | 0x34700001
    keys[:, K_PORTS], keys[:, K_PROTO] = (50000 << 16) | 3478, 17
    stats = np.zeros((2, N_STATS), np.int64)
    stats[:, S_CAT], stats[:, S_CLIENT_A], stats[:, S_PK_UP] = CATEGORIES.index("audio"), 1, 4
    dscp_val = np.zeros((2, DSCP_SLOTS), np.int8)
    dscp_val[:, 0] = (1, 35)  # DSCP 0, DSCP 34
    dscp_cnt = np.zeros((2, DSCP_SLOTS), np.int64)
    dscp_cnt[:, 0] = 4
    listed = []
    for order in ([0, 1], [1, 0]):
        s = _summary(1)
        s.add(Flows(keys[order], stats[order], dscp_val[order], dscp_cnt[order], [""]))
        listed.append(s.reported)
    assert listed[0] == listed[1]
    assert [e["dscp"] for e in listed[0]] == ["0:4"] and listed[0][0]["verdict"] == "missing"
