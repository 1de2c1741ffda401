"""Directions, time series, rates and the QoS audit on captures built in the test."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

import classifier
from classifier.measures import Inside, Series, parse_duration
from classifier.pipeline import Options
from classifier.prefixes import find_interval
from tests import writers


def _split(addr: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(addr)
    v = int(ip) if ip.version == 6 else (0xFFFF << 32) | int(ip)
    return v >> 64, v & (2**64 - 1)


addresses = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str),
    st.sampled_from(["10.0.0.1", "192.168.255.255", "172.31.0.1", "fd00::1", "::1"]),
)
networks = st.one_of(
    st.ip_addresses(v=4).flatmap(lambda a: st.integers(0, 32).map(
        lambda n: str(ipaddress.ip_network(f"{a}/{n}", strict=False)))),
    st.ip_addresses(v=6).flatmap(lambda a: st.integers(0, 128).map(
        lambda n: str(ipaddress.ip_network(f"{a}/{n}", strict=False)))),
)


@settings(max_examples=200, deadline=None)
@given(nets=st.lists(networks, min_size=1, max_size=6), addrs=st.lists(addresses, min_size=1,
                                                                         max_size=30))
def test_inside_equals_ipaddress(nets: list[str], addrs: list[str]) -> None:
    inside = Inside(nets)
    parsed = [ipaddress.ip_network(n) for n in nets]
    hi = np.array([_split(a)[0] for a in addrs], np.uint64)
    lo = np.array([_split(a)[1] for a in addrs], np.uint64)
    # One column holds both families: an IPv4-mapped IPv6 address is its IPv4 address.
    norm = [getattr(ipaddress.ip_address(a), "ipv4_mapped", None) or ipaddress.ip_address(a)
            for a in addrs]
    want = [any(ip in n for n in parsed if n.version == ip.version) for ip in norm]
    assert inside(hi, lo).tolist() == want
    # The same as address intervals, as the compiled pass looks them up.
    assert inside.starts_hi[0] == 0 and inside.starts_lo[0] == 0
    starts = [(int(a) << 64) | int(b) for a, b in zip(inside.starts_hi, inside.starts_lo,
                                                     strict=True)]
    assert starts == sorted(set(starts))
    found = [bool(inside.flags[find_interval.py(inside.starts_hi, inside.starts_lo,
                                                int(h), int(low))])
             for h, low in zip(hi, lo, strict=True)]
    assert found == want


@st.composite
def nets_and_edges(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Networks, and addresses at and beside their edges (where a /16 may be cut)
    besides drawn ones."""
    nets = draw(st.lists(networks, min_size=1, max_size=6))
    edges = []
    for n in map(ipaddress.ip_network, nets):
        top = 2**32 - 1 if n.version == 4 else 2**128 - 1
        for v in (int(n.network_address) - 1, int(n.network_address),
                  int(n.broadcast_address), int(n.broadcast_address) + 1):
            if 0 <= v <= top:
                edges.append(str(ipaddress.ip_address(v) if n.version == 4
                                 else ipaddress.IPv6Address(v)))
    return nets, edges + draw(st.lists(addresses, max_size=20))


@settings(max_examples=200, deadline=None)
@given(case=nets_and_edges())
def test_compiled_directions_equal_the_numpy_ones(case: tuple[list[str], list[str]]) -> None:
    """The compiled pass (an IPv4 address answered by its /16 unless the networks cut
    it, else searched) gives every packet the direction numpy's membership test does."""
    from classifier.decode import Headers
    from classifier.measures import count_details, directions_of

    nets, addrs = case
    inside = Inside(nets)
    n = len(addrs) ** 2
    h = Headers.empty(n)
    pairs = [(a, b) for a in addrs for b in addrs]
    for col, which in ((h.src_hi, 0), (h.src_lo, 1)):
        col[:] = [_split(a)[which] for a, _ in pairs]
    for col, which in ((h.dst_hi, 0), (h.dst_lo, 1)):
        col[:] = [_split(b)[which] for _, b in pairs]
    h.ip[:] = 4
    h.dscp[:] = 0
    k = 3
    out = np.empty(n, np.int64)
    count_details.compiled(
        np.zeros(n, np.int32), np.ones(n, np.int64), h.src_hi, h.src_lo, h.dst_hi, h.dst_lo,
        h.ip, h.dscp, np.zeros(0, np.bool_), inside.starts_hi, inside.starts_lo,
        inside.flags, inside.v4_blocks, np.full(k, -1, np.int64), np.zeros(n, np.int64),
        np.zeros((k, 4, 2), np.int64), np.zeros((k, 4, 2), np.int64),
        np.zeros((1, k, 4), np.int64), np.zeros((1, k, 4), np.int64), out)
    assert out.tolist() == directions_of(h, inside).tolist()


@pytest.mark.parametrize(("text", "ns"), [("1s", 10**9), ("100ms", 10**8), ("5m", 3 * 10**11),
                                           ("1h", 3_600 * 10**9), ("2", 2 * 10**9),
                                           ("250us", 250_000)])
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "fast", "-1s", "0s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


CLIENT, RELAY, WEB = "10.0.0.5", "52.112.1.1", "13.107.6.1"
T0 = 1_700_000_000  # an interval boundary: 1 s bins start here


def _capture(tmp_path: Path) -> Path:
    """Known by construction, over 3 seconds:
    - an audio call: 50 packets/s up (200 bytes, DSCP 46) and down (180 bytes, DSCP 0)
      for seconds 0-2 (150 up, 150 down), client 10.0.0.5:50010, relay 3478;
    - a second audio stream in second 1 only: 50 packets up, 120 bytes, DSCP 0;
    - HTTPS: a SYN from the client at t=0.5, then 10 packets of 1000 bytes down in
      second 2.
    """
    recs: list[tuple[int, bytes, int]] = []

    def add(t: float, pkt: object, size: int) -> None:
        raw = bytes(pkt)  # type: ignore[call-overload]
        raw = raw + b"\0" * (size - len(raw))
        recs.append((round(t * 1e9) + T0 * 10**9, raw, len(raw)))

    for k in range(150):
        t = k / 50
        add(t, Ether() / IP(src=CLIENT, dst=RELAY, tos=46 << 2) / UDP(sport=50010, dport=3478),
            200)
        add(t + 0.001, Ether() / IP(src=RELAY, dst=CLIENT) / UDP(sport=3478, dport=50010), 180)
    for k in range(50):
        add(1 + k / 50 + 0.002, Ether() / IP(src=CLIENT, dst=RELAY) /
            UDP(sport=50011, dport=3478), 120)
    add(0.5, Ether() / IP(src=CLIENT, dst=WEB) / TCP(sport=50999, dport=443, flags="S"), 60)
    for k in range(10):
        add(2 + k / 20, Ether() / IP(src=WEB, dst=CLIENT) / TCP(sport=443, dport=50999,
                                                               flags="A"), 1000)
    recs.sort(key=lambda r: r[0])
    path = tmp_path / "known.pcap"
    path.write_bytes(writers.pcap(recs))
    return path


def test_directions_series_rates_and_qos(tmp_path: Path) -> None:
    path = _capture(tmp_path)
    doc = classifier.analyze(str(path), options=Options(interval_ns=10**9)).to_dict()
    audio = doc["directions"]["audio"]
    assert audio["upload"] == {"packets": 200, "bytes": 150 * 200 + 50 * 120}
    assert audio["download"] == {"packets": 150, "bytes": 150 * 180}
    https = doc["directions"]["https"]
    assert https["upload"] == {"packets": 1, "bytes": 60}
    assert https["download"] == {"packets": 10, "bytes": 10_000}
    s = doc["series"]
    assert s["interval_s"] == 1.0 and s["start"] == [T0, T0 + 1, T0 + 2]
    assert s["bytes"]["audio"]["upload"] == [50 * 200, 50 * 200 + 50 * 120, 50 * 200]
    assert s["packets"]["audio"]["download"] == [50, 50, 50]
    assert s["bytes"]["https"]["download"] == [0, 0, 10_000]
    assert s["active_flows"]["audio"] == [1, 2, 1]  # concurrent audio streams
    assert s["active_flows"]["https"] == [1, 0, 1]
    up = doc["rates"]["categories"]["audio"]["upload"]
    per_s = np.array([10_000, 16_000, 10_000]) * 8
    assert up["average_bps"] == pytest.approx(per_s.mean())
    assert up["peak_bps"] == 128_000
    assert up["p95_bps"] == pytest.approx(np.percentile(per_s, 95))
    qos = doc["qos"]["categories"]["audio"]
    assert qos["expected_dscp"] == 46
    assert qos["upload"] == {"packets": 200, "marked": 150, "share": 0.75}
    assert qos["download"] == {"packets": 150, "marked": 0, "share": 0.0}
    # The call's flow carries 46 up and 0 down: "missing"; the second stream: "missing".
    assert doc["qos"]["flows"]["audio"] == {"ok": 0, "missing": 2, "wrong": 0}
    reported = {r["client"]: r for r in doc["qos"]["reported"]}
    assert reported[f"{CLIENT}:50010"]["dscp"] == "46:150 0:150"
    assert doc["flows_summary"]["flows"] == 3
    assert doc["flows_summary"]["categories"]["audio"] == 2


def test_inside_option_turns_upload_into_local(tmp_path: Path) -> None:
    path = _capture(tmp_path)
    opts = Options(inside=("10.0.0.0/8", "52.112.0.0/14"))
    doc = classifier.analyze(str(path), options=opts).to_dict()
    assert doc["directions"]["audio"]["local"]["packets"] == 350
    assert doc["directions"]["https"]["upload"]["packets"] == 1
    assert doc["inside"] == ["10.0.0.0/8", "52.112.0.0/14"]


def test_series_merge_aligns_bins() -> None:
    a, b = Series(10, 2), Series(10, 2)
    ra = a.rows(np.array([5, 6]))
    rb = b.rows(np.array([7, 5]))
    a.packets[ra[0], 1, 0] = 3
    b.packets[rb[0], 0, 1] = 4
    b.packets[rb[1], 1, 0] = 2
    m = a + b
    bins, rows = m.ordered()
    assert bins.tolist() == [5, 6, 7]
    assert m.packets[rows[0], 1, 0] == 5 and m.packets[rows[2], 0, 1] == 4


def test_rates_count_intervals_without_packets_as_zero() -> None:
    s = Series(10**9, 1)
    rows = s.rows(np.array([0, 9]))  # ten intervals, two with traffic
    s.bytes[rows[0], 0, 0] = 1000
    s.bytes[rows[1], 0, 0] = 3000
    r = s.rates()
    dense = np.array([1000, 0, 0, 0, 0, 0, 0, 0, 0, 3000]) * 8
    assert r[0, 0, 0] == pytest.approx(dense.mean())
    assert r[0, 0, 1] == dense.max()
    assert r[0, 0, 2] == pytest.approx(np.percentile(dense, 95))


def test_a_stray_timestamp_costs_one_interval(tmp_path: Path) -> None:
    a = bytes(Ether() / IP(src="10.0.0.1", dst="8.8.8.8") / UDP(sport=5000, dport=53))
    recs = [(0, a, len(a)), (T0 * 10**9, a, len(a))]  # 1970 and 2023
    path = tmp_path / "stray.pcap"
    path.write_bytes(writers.pcap(recs))
    doc = classifier.analyze(str(path), options=Options(interval_ns=10**6)).to_dict()
    assert len(doc["series"]["start"]) == 2


def test_schema_2_keeps_schema_1(tmp_path: Path) -> None:
    doc = json.loads(json.dumps(classifier.analyze(str(_capture(tmp_path))).to_dict()))
    assert doc["schema"] == 2
    assert "series" not in doc  # only with an interval
    total = sum(v["packets"] for c in doc["directions"].values() for v in c.values())
    assert total == doc["totals"]["packets"]


def test_too_many_intervals_widen_the_interval(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Series, "MAX_ROWS", 2)
    path = _capture(tmp_path)  # three 1 s intervals with traffic
    result = classifier.analyze(str(path), options=Options(interval_ns=10**9))
    doc = result.to_dict()
    # Three intervals are over 2: widened until they fit in half of it, with headroom.
    assert doc["series"]["interval_s"] == 4.0
    assert sum(doc["series"]["bytes"]["audio"]["upload"]) == \
        doc["directions"]["audio"]["upload"]["bytes"]
    assert any("interval widened to 4 s" in w for w in result.captures[0].warnings)


def test_series_of_different_intervals_merge_at_the_wider() -> None:
    a, b = Series(10, 1), Series(20, 1)
    ra, rb = a.rows(np.array([0, 1, 2])), b.rows(np.array([0]))
    a.packets[ra, 0, 0] = [1, 2, 3]
    b.packets[rb, 0, 0] = 10
    m = a + b
    bins, rows = m.ordered()
    assert m.interval_ns == 20 and bins.tolist() == [0, 1]
    assert m.packets[rows, 0, 0].tolist() == [13, 3]
