"""The bandwidth report: projection arithmetic, numbers known by construction, the
text formats, escaping and the command's errors (the page in a browser:
``test_report_browser.py``)."""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from classifier.lookup import compile_rules
from classifier.pipeline import Options, analyze
from classifier.report import TopFlows, bottom_up, build_report, render_report, scaled
from classifier.report.guidance import figure_for
from classifier.report.html import lookup
from classifier.report.units import human_bytes, human_duration, human_rate, human_share
from classifier.rules import load_rules
from tests import report_capture as rc
from tests import writers

CATEGORIES = compile_rules(load_rules(None)).categories
HOSTILE_NAME = ('<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
                '<b>teams & co</b>')


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "classifier", *args], capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "calls.pcap"
    path.write_bytes(rc.capture())
    return path


def analysed(path: Path, top: int = 20) -> tuple[Any, TopFlows]:
    result = analyze([str(path)], options=Options(
        inside=(rc.INSIDE,), interval_ns=1_000_000_000,
        flow_digest=functools.partial(TopFlows, top=top)))
    assert isinstance(result.digest, TopFlows)
    return result, result.digest


@pytest.fixture(scope="module")
def report(capture: Path) -> dict[str, Any]:
    result, collector = analysed(capture)
    return build_report(result, collector, users=4, plan_users=40)


# -- projection arithmetic, by hand ---------------------------------------------------

def test_scaled_projection_is_the_p95_per_user_times_the_planned_users() -> None:
    est = scaled(2_000_000, 10, 50, direction="upload", interval_s=1)
    assert [s.value for s in est.steps] == [2_000_000, 200_000, 10_000_000]
    assert est.value == 10_000_000
    assert all(s.assumption for s in est.steps)
    assert "10 users" in est.steps[1].assumption


def test_bottom_up_projection_is_streams_times_figures_plus_non_media() -> None:
    # 4 audio and 2 video streams (95th pct.) for 10 users -> 10 and 5 for 25 users:
    # 10 x 58 kbit/s + 5 x 2,500 kbit/s + 1 Mbit/s x 2.5 = 0.58 + 12.5 + 2.5 Mbit/s.
    est = bottom_up({"audio": 4, "video": 2}, {"audio": 58, "video": 2500}, 1_000_000,
                    10, 25, direction="upload", level="recommended")
    values = [s.value for s in est.steps]
    assert values == pytest.approx([10, 580_000, 5, 12_500_000, 2_500_000, 15_580_000])
    assert [s.unit for s in est.steps] == ["streams", "bps", "streams", "bps", "bps", "bps"]
    assert "recommended upload figure per audio stream" in est.steps[1].assumption


def test_projection_for_the_same_users_is_the_measurement() -> None:
    assert scaled(123_456.5, 7, 7, direction="download", interval_s=1).value == \
        pytest.approx(123_456.5)
    assert bottom_up({}, {}, 5_000, 3, 3, direction="download", level="best").value == 5_000


def test_projection_needs_users() -> None:
    with pytest.raises(ValueError):
        scaled(1, 0, 10, direction="upload", interval_s=1)
    with pytest.raises(ValueError):
        bottom_up({}, {}, 1, 10, 0, direction="upload", level="minimum")


def test_guidance_figures_are_microsofts_table() -> None:
    assert figure_for("audio").kbps("recommended", "upload") == 58
    assert figure_for("audio").kbps("best", "download") == 76
    video = figure_for("video")
    assert video.scenario == "meeting"
    assert (video.kbps("minimum", "upload"), video.kbps("minimum", "download")) == (150, 200)
    assert (video.kbps("recommended", "upload"),
            video.kbps("recommended", "download")) == (2500, 4000)
    assert figure_for("desktop-sharing").kbps("minimum", "download") == 250


# -- the report of a capture known by construction ------------------------------------

def test_link_rates_are_the_constructed_ones(report: dict[str, Any]) -> None:
    for d, up in (("upload", True), ("download", False)):
        bps = np.array(rc.per_second(None, up)) * 8
        link = report["links"][d]
        assert link["bytes"] == sum(rc.per_second(None, up))
        assert link["peak_bps"] == bps.max()
        assert link["average_bps"] == pytest.approx(bps.mean())
        assert link["p95_bps"] == pytest.approx(np.percentile(bps, 95))
    assert report["capture"]["packets"] == len(rc.records())
    assert report["capture"]["duration_s"] == pytest.approx(19.98, abs=1e-3)


def test_streams_and_per_stream_rates_are_the_constructed_ones(report: dict[str, Any]) -> None:
    # audio: 1 stream for 10 s, 2 for 10 s; video: 1 for 10 of 20 s; sharing 1 for 5 s.
    assert report["streams"]["audio"] == {"peak": 2, "p95": 2.0, "average": 1.5,
                                          "stream_seconds": 30.0}
    assert report["streams"]["video"]["p95"] == 1.0
    assert report["streams"]["desktop-sharing"] == {"peak": 1, "p95": 1.0, "average": 0.25,
                                                    "stream_seconds": 5.0}
    # audio up: 50 packets/s x 200 B x 8 per stream-second; down 180 B.
    ps = report["per_stream"]
    assert (ps["audio"]["upload_bps"], ps["audio"]["download_bps"]) == (80_000, 72_000)
    assert (ps["video"]["upload_bps"], ps["video"]["download_bps"]) == (160_000, 192_000)
    assert (ps["desktop-sharing"]["upload_bps"],
            ps["desktop-sharing"]["download_bps"]) == (112_000, 8_000)


def test_projection_of_the_constructed_capture(report: dict[str, Any]) -> None:
    proj = report["projection"]
    assert (proj["users"], proj["plan_users"], proj["level"]) == (4, 40, "recommended")
    up, down = proj["directions"]["upload"], proj["directions"]["download"]
    # Bottom-up, 10x the users: 20 audio x 58 + 10 video x 2,500 + 10 sharing x 2,500
    # kbit/s, plus https (20 packets/s x 100 B up, x 1,500 B down) x 10.
    assert up["bottom_up"]["value_bps"] == pytest.approx(
        20 * 58_000 + 10 * 2_500_000 + 10 * 2_500_000 + 10 * 16_000)
    assert down["bottom_up"]["value_bps"] == pytest.approx(
        20 * 58_000 + 10 * 4_000_000 + 10 * 2_500_000 + 10 * 240_000)
    for d, est, is_up in (("upload", up, True), ("download", down, False)):
        p95 = np.percentile(np.array(rc.per_second(None, is_up)) * 8, 95)
        assert est["scaled"]["value_bps"] == pytest.approx(p95 / 4 * 40), d
        assert all(s["assumption"] for s in est["scaled"]["steps"] + est["bottom_up"]["steps"])


def test_media_of_unknown_modality_is_counted_as_streams_and_projected_by_rate(
        tmp_path: Path) -> None:
    """``teams.toml`` calls UDP to the Teams media ranges on other ports ``media``: its
    flows are concurrent streams with a measured rate, no per-stream guidance, and the
    bottom-up projection scales their rate instead of counting them as non-media."""
    streams = (
        rc.Stream("audio", 17, ("10.0.0.1", 50000), ("52.112.0.10", 3479), range(0, 20), 50,
                  200, 180, 46),
        # 10 of the 20 seconds, two at once for 5 of them.
        rc.Stream("media", 17, ("10.0.0.5", 40000), ("52.112.0.20", 40001), range(0, 10), 50,
                  300, 250, 46),
        rc.Stream("media", 17, ("10.0.0.6", 40002), ("52.112.0.20", 40003), range(5, 10), 50,
                  300, 250, 46),
        rc.Stream("https", 6, ("10.0.0.4", 40000), ("52.96.0.1", 443), range(0, 20), 20, 100,
                  1500, 0),
    )
    path = tmp_path / "media.pcap"
    path.write_bytes(rc.capture(streams))
    result = analyze([str(path)], rules="teams", options=Options(
        inside=(rc.INSIDE,), interval_ns=1_000_000_000))
    assert {c: v.packets for c, v in result.categories.items() if v.packets} == {
        "audio": 2_000, "media": 1_500, "https": 800}
    report = build_report(result, users=4, plan_users=40)
    assert report["streams"]["media"] == {"peak": 2, "p95": 2.0, "average": 0.75,
                                          "stream_seconds": 15.0}
    media = report["per_stream"]["media"]
    assert (media["upload_bps"], media["download_bps"]) == (120_000, 100_000)
    assert media["guidance"] == [] and media["rule_of_thumb_kbps"] is None
    assert not media["modality_known"] and report["per_stream"]["audio"]["modality_known"]
    # The rate of media per second: 1 or 2 streams x 50 packets x 300 B (up) x 8 bit.
    up = np.array([2 * 120_000 if 5 <= t < 10 else 120_000 if t < 10 else 0
                   for t in range(20)])
    assert report["unknown_modality_p95_bps"]["upload"]["media"] == pytest.approx(
        np.percentile(up, 95))
    assert report["non_media_p95_bps"]["upload"] == pytest.approx(20 * 100 * 8)  # https
    est = report["projection"]["directions"]["upload"]["bottom_up"]
    steps = {s["label"]: s["value"] for s in est["steps"]}
    assert steps["media (modality unknown)"] == pytest.approx(np.percentile(up, 95) * 10)
    assert est["value_bps"] == pytest.approx(
        10 * 58_000 + np.percentile(up, 95) * 10 + 16_000 * 10)
    text = render_report(result, report, "md")
    assert "| media | modality unknown" in text
    page = render_report(result, report, "html")
    assert "modality unknown (audio, video or sharing)" in page


def test_top_flows_talkers_and_qos(report: dict[str, Any]) -> None:
    flows = [(f["category"], f["bytes"]) for f in report["top_flows"]]
    assert flows == [("https", 640_000), ("video", 440_000), ("audio", 380_000),
                     ("audio", 190_000), ("desktop-sharing", 75_000)]
    assert report["top_flows"][0]["server_addr"] == "52.96.0.1"
    talkers = [(t["address"], t["bytes"], t["inside"]) for t in report["top_talkers"]]
    assert talkers[:4] == [("52.112.0.10", 1_010_000, False), ("10.0.0.1", 820_000, True),
                           ("10.0.0.4", 640_000, True), ("52.96.0.1", 640_000, False)]
    assert report["qos"]["desktop-sharing"]["flows"] == {"ok": 0, "missing": 1, "wrong": 0}
    assert report["qos"]["audio"]["upload"]["share"] == 1.0
    assert report["qos_reported"][0]["category"] == "desktop-sharing"


def test_without_users_there_is_no_projection(capture: Path) -> None:
    result, collector = analysed(capture)
    assert build_report(result, collector)["projection"] is None
    today = build_report(result, collector, users=4)["projection"]
    assert today["plan_users"] == 4
    with pytest.raises(ValueError, match="--users"):
        build_report(result, collector, plan_users=10)


# -- the flow collector -----------------------------------------------------------------

def _columns(n: int, offset: int = 0, name: str | None = None) -> dict[str, list[Any]]:
    rows = range(offset, offset + n)
    return {
        "protocol": [6] * n, "client_addr": [f"10.0.{i // 256}.{i % 256}" for i in rows],
        "client_port": [40000] * n, "server_addr": ["52.96.0.1"] * n,
        "server_port": [443] * n, "category": ["https"] * n,
        "first_ts": [0.0] * n, "last_ts": [1.0] * n, "packets_up": [1] * n,
        "bytes_up": [i + 1 for i in rows], "packets_down": [1] * n,
        "bytes_down": [0] * n, "dscp": ["0:2"] * n, "server_name": [name] * n,
    }


def test_top_flows_do_not_depend_on_chunks_and_merge() -> None:
    whole = TopFlows(CATEGORIES, top=5)
    whole.add_columns(_columns(100))
    chunked, a, b = (TopFlows(CATEGORIES, top=5) for _ in range(3))
    for start in range(0, 100, 7):
        chunked.add_columns(_columns(min(7, 100 - start), start))
    a.add_columns(_columns(40))
    b.add_columns(_columns(60, 40))
    merged = a + b
    assert [f["bytes"] for f in whole.flows] == [100, 99, 98, 97, 96]
    for other in (chunked, merged):
        assert other.flows == whole.flows
        assert [(k, v.bytes) for k, v in other.talkers()] == \
            [(k, v.bytes) for k, v in whole.talkers()]
    assert whole.talkers(1)[0] == ("52.96.0.1", whole.hosts["52.96.0.1"])
    assert whole.hosts["52.96.0.1"].received == sum(range(1, 101))


def test_talkers_are_bounded() -> None:
    collector = TopFlows(CATEGORIES, top=3, max_hosts=20)
    collector.add_columns(_columns(50))
    assert len(collector.hosts) <= 20
    assert collector.pruned == 51 - 10  # 51 hosts, pruned to half the bound
    # The largest survive.
    assert [k for k, _ in collector.talkers()] == ["52.96.0.1", "10.0.0.49", "10.0.0.48"]


# -- formats -------------------------------------------------------------------------------

def test_human_units() -> None:
    assert human_rate(58_000) == "58.0 kbit/s"
    assert human_rate(2_500_000) == "2.50 Mbit/s"
    assert human_rate(999) == "999 bit/s"
    assert human_rate(999.7) == "1.00 kbit/s"
    assert human_rate(123_456_789_000) == "123 Gbit/s"
    assert human_bytes(812) == "812 B"
    assert human_bytes(1_200_000) == "1.20 MB"
    assert human_bytes(3_400_000_000) == "3.40 GB"
    assert human_share(0.125) == "12.5%"
    assert human_duration(725) == "12 min 5 s"


def test_json_csv_and_markdown_carry_the_same_numbers(capture: Path) -> None:
    args = ("report", str(capture), "--inside", rc.INSIDE, "--users", "4", "--plan-users",
            "40", "-q")
    proc = run(*args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    result, collector = analysed(capture)
    expected = build_report(result, collector, users=4, plan_users=40)
    assert doc == json.loads(json.dumps(expected))

    rows = list(csv.DictReader(io.StringIO(run(*args, "--format", "csv").stdout)))
    by = {(r["section"], r["item"], r["direction"], r["metric"]): r["value"] for r in rows}
    assert float(by[("link", "", "upload", "p95_bps")]) == doc["links"]["upload"]["p95_bps"]
    for t in doc["traffic"]:
        assert float(by[("traffic", t["category"], t["direction"], "p95_bps")]) == \
            t["p95_bps"]
        assert int(by[("traffic", t["category"], t["direction"], "bytes")]) == t["bytes"]
    for d in ("upload", "download"):
        for m in ("scaled", "bottom_up"):
            assert float(by[(f"projection_{m}", "40 users", d, "needed_bps")]) == \
                doc["projection"]["directions"][d][m]["value_bps"]

    md = run(*args, "--format", "md").stdout
    for d in ("upload", "download"):
        both = doc["projection"]["directions"][d]
        assert (f"| {d} | {human_rate(both['scaled']['value_bps'])} | "
                f"{human_rate(both['bottom_up']['value_bps'])} |") in md
    assert f"| upload | {human_bytes(doc['links']['upload']['bytes'])} |" in md


def test_html_is_self_contained_and_its_numbers_are_the_json(report: dict[str, Any],
                                                            capture: Path) -> None:
    result, _ = analysed(capture)
    page = render_report(result, report, "html")
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r"\bsrc=", page) and "@import" not in page
    urls = set(re.findall(r"https?://[^\"'\s)<]+", page))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
    assert page.count("<svg") == 2
    spans = re.findall(r'data-key="([^"]+)" data-value="([^"]*)"', page)
    assert len(spans) > 100
    for key, value in spans:
        assert float(value) == lookup(report, key), key


def test_capture_borne_strings_are_escaped(capture: Path, tmp_path: Path) -> None:
    hostile_path = tmp_path / '<img src=x onerror="window.__pwned=3">.pcap'
    shutil.copy(capture, hostile_path)
    result, collector = analysed(hostile_path)
    collector.add_columns(_columns(1, name=HOSTILE_NAME) | {"bytes_up": [10**9]})
    doc = build_report(result, collector)
    assert doc["top_flows"][0]["server_name"] == HOSTILE_NAME  # kept as it came
    page = render_report(result, doc, "html")
    lowered = page.lower()
    assert "<script" not in lowered and "<img" not in lowered and "<b>teams" not in lowered
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert "&lt;b&gt;teams &amp; co&lt;/b&gt;" in page
    assert "&lt;img src=x onerror=" in page  # the capture's file name
    md = render_report(result, doc, "md")
    assert "<script" not in md and "<img" not in md and "&lt;script&gt;" in md


def test_cli_errors_are_one_line(capture: Path, tmp_path: Path) -> None:
    cases = [
        (("--plan-users", "10"), "--plan-users needs --users"),
        (("--interval", "soon"), "not a duration"),
        (("-o", str(tmp_path / "missing" / "r.html")), "cannot write"),
        (("--rules", str(tmp_path / "none.toml")), "none.toml"),
    ]
    for extra, needle in cases:
        proc = run("report", str(capture), "-q", *extra)
        assert proc.returncode == 2, extra
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    out = tmp_path / "r.md"
    proc = run("report", str(bad), "--format", "md", "-o", str(out), "-q")
    assert proc.returncode == 2 and "bad.pcap" in proc.stderr
    assert "unreadable" in out.read_text()  # the report still says what happened


def test_long_captures_are_drawn_over_longer_intervals(capture: Path) -> None:
    # 19.98 s at 10 ms is 1,999 intervals: drawn as 1,000 of 20 ms; figures stay at 10 ms.
    result = analyze([str(capture)], options=Options(
        inside=(rc.INSIDE,), interval_ns=10_000_000, flow_digest=TopFlows))
    doc = build_report(result, result.digest)
    assert doc["capture"]["interval_s"] == 0.01 and doc["capture"]["intervals"] == 1999
    page = render_report(result, doc, "html")
    assert "0.02 s intervals" in page and "0.01 s intervals" not in page
    assert "kbit/s" in page.split("<svg", 1)[1]  # the axis unit fits the rates
    assert len(page) < 1_500_000


def _tops(t: TopFlows) -> tuple[list[dict[str, Any]], list[tuple[str, int, int, int]]]:
    return t.flows, [(a, h.sent, h.received, h.flows) for a, h in t.hosts.items()]


def test_top_flows_are_the_same_with_a_sink_and_in_parallel(capture: Path,
                                                             tmp_path: Path) -> None:
    # Two captures (the second with another inside address): one process with a flow
    # sink, two processes with a digest per capture; and one capture in byte ranges.
    second = tmp_path / "later.pcap"
    second.write_bytes(rc.capture().replace(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 9])))
    files = [str(capture), str(second)]
    sink = TopFlows(CATEGORIES, top=8)
    analyze(files, options=Options(inside=(rc.INSIDE,), flow_sink=sink), jobs=2)
    digest = functools.partial(TopFlows, top=8)
    parallel = analyze(files, options=Options(inside=(rc.INSIDE,), flow_digest=digest),
                       jobs=2)
    assert isinstance(parallel.digest, TopFlows)
    assert parallel.digest.records == sink.records == 10
    assert _tops(parallel.digest)[0] == _tops(sink)[0]
    assert sorted(_tops(parallel.digest)[1]) == sorted(_tops(sink)[1])
    assert "10.0.0.9" in parallel.digest.hosts

    from classifier.split import analyze_split, plan_ranges

    rules = load_rules(None)
    ranges = plan_ranges(str(capture), 3, min_bytes=0)
    assert ranges is not None and len(ranges) == 3
    opts = Options(inside=(rc.INSIDE,), flow_digest=digest)
    split = analyze_split(str(capture), rules, compile_rules(rules), ranges, options=opts)
    whole = analyze([str(capture)], options=opts)
    assert split.digest is not None and whole.digest is not None
    assert split.digest.flows == whole.digest.flows
    assert sorted(_tops(split.digest)[1]) == sorted(_tops(whole.digest)[1])


def test_rates_of_one_capture_are_the_analysis_rates(capture: Path) -> None:
    result, collector = analysed(capture)
    rates = result.to_dict()["rates"]["categories"]
    for row in build_report(result, collector)["traffic"]:
        r = rates[row["category"]][row["direction"]]
        assert (row["average_bps"], row["peak_bps"], row["p95_bps"]) == \
            (r["average_bps"], r["peak_bps"], r["p95_bps"])


def test_time_between_captures_is_not_counted_as_idle(capture: Path, tmp_path: Path) -> None:
    # The same traffic again an hour later: 40 observed intervals, not 3,620, and the
    # same average and 95th percentile as one capture.
    later = tmp_path / "later.pcap"
    later.write_bytes(writers.pcap([(ts + 3600 * 10**9, data, n)
                                    for ts, data, n in rc.records()]))
    one, _ = analysed(capture)
    both = analyze([str(capture), str(later)], options=Options(
        inside=(rc.INSIDE,), interval_ns=1_000_000_000, flow_digest=TopFlows))
    single, double = build_report(one), build_report(both)
    assert (single["capture"]["intervals"], double["capture"]["intervals"]) == (20, 40)
    assert double["links"] == {d: {**v, "bytes": 2 * v["bytes"]}
                               for d, v in single["links"].items()}
    assert double["streams"]["audio"]["p95"] == single["streams"]["audio"]["p95"] == 2.0
