"""Live capture: packets replayed into a veth pair are counted exactly as ``analyze``
counts the capture they came from (both backends, filters, signals, written files,
metrics). Needs root, iproute2 and tcpreplay; skipped without them."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from .livenet import ROOT, Sniffer, VethPair, analyze_json, veth

__all__ = ["veth"]  # the fixture, used by name

MIX = ROOT / "pcaps" / "office365-mix.pcap"
MIX_PACKETS = 345  # by construction, see pcaps/expected.json


def _same_counts(live: dict[str, Any], ref: dict[str, Any], flows: bool = True) -> None:
    assert live["categories"] == ref["categories"]
    assert live["directions"] == ref["directions"]
    assert live["totals"] == ref["totals"]
    assert live["anomalies"] == ref["anomalies"]
    if flows:
        assert live["flows_summary"]["categories"] == ref["flows_summary"]["categories"]


@pytest.mark.parametrize("backend", ["af_packet", "scapy"])
def test_live_totals_equal_analyze_of_the_replayed_capture(
        veth: VethPair, tmp_path: Path, backend: str) -> None:
    sniffer = Sniffer(veth, tmp_path, "--backend", backend, "--count", str(MIX_PACKETS))
    try:
        veth.replay(MIX)
        code, live = sniffer.result()
    finally:
        sniffer.kill()
    assert code == 0, sniffer.stderr
    _same_counts(live, analyze_json(MIX))
    assert live["schema"] == 2
    assert live["captures"][0]["path"] == veth.inner
    assert live["captures"][0]["format"] == "live"
    capture = live["capture"]
    assert capture["backend"] == backend
    assert capture["link_type"] == 1
    assert (capture["received"], capture["dropped"]) == (MIX_PACKETS, 0)


def test_vlan_tags_taken_out_by_the_kernel_are_put_back(veth: VethPair, tmp_path: Path) -> None:
    vlan = ROOT / "pcaps" / "ethernet-vlan.pcap"
    ref = analyze_json(vlan)
    sniffer = Sniffer(veth, tmp_path, "--count", str(ref["totals"]["packets"]))
    try:
        veth.replay(vlan)
        code, live = sniffer.result()
    finally:
        sniffer.kill()
    assert code == 0, sniffer.stderr
    _same_counts(live, ref)


def test_any_interface_is_read_cooked(veth: VethPair, tmp_path: Path) -> None:
    sniffer = Sniffer(veth, tmp_path, "--count", str(MIX_PACKETS), interface="any")
    try:
        veth.replay(MIX)
        code, live = sniffer.result()
    finally:
        sniffer.kill()
    assert code == 0, sniffer.stderr
    assert live["capture"]["link_type"] == 113
    ref = analyze_json(MIX)
    # The same packets; each with a 16-byte cooked header instead of 14 bytes of Ethernet.
    for name, totals in ref["categories"].items():
        got = live["categories"][name]
        assert got["packets"] == totals["packets"], name
        assert got["bytes"] == totals["bytes"] + 2 * totals["packets"], name


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_bpf_filter_runs_in_the_kernel(veth: VethPair, tmp_path: Path) -> None:
    expected = tmp_path / "udp.pcap"
    subprocess.run(["tcpdump", "-r", str(MIX), "-w", str(expected), "udp"], check=True,
                   capture_output=True)
    ref = analyze_json(expected)
    n = ref["totals"]["packets"]
    assert 0 < n < MIX_PACKETS
    sniffer = Sniffer(veth, tmp_path, "--bpf", "udp", "--count", str(n))
    try:
        veth.replay(MIX)
        time.sleep(0.5)  # anything the filter wrongly let through would be counted
        code, live = sniffer.result()
    finally:
        sniffer.kill()
    assert code == 0, sniffer.stderr
    _same_counts(live, ref)
    assert live["capture"]["filter"] == "udp"
    assert live["capture"]["received"] == n  # the others never left the kernel


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_bpf_filter_on_any_sees_packets_from_the_ip_header(
        veth: VethPair, tmp_path: Path) -> None:
    expected = tmp_path / "udp.pcap"
    subprocess.run(["tcpdump", "-r", str(MIX), "-w", str(expected), "udp"], check=True,
                   capture_output=True)
    ref = analyze_json(expected)
    n = ref["totals"]["packets"]
    sniffer = Sniffer(veth, tmp_path, "--bpf", "udp", "--count", str(n), interface="any")
    try:
        veth.replay(MIX)
        time.sleep(0.5)
        code, live = sniffer.result()
    finally:
        sniffer.kill()
    assert code == 0, sniffer.stderr
    assert live["capture"]["received"] == n
    for name, totals in ref["categories"].items():
        got = live["categories"][name]
        assert got["packets"] == totals["packets"], name
        assert got["bytes"] == totals["bytes"] + 2 * totals["packets"], name


def test_bad_filter_is_one_line(veth: VethPair) -> None:
    proc = subprocess.run(veth.exec(*_cli("sniff", "-i", veth.inner, "--bpf", "udp prt 53")),
                          capture_output=True, text=True, check=False, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "--bpf 'udp prt 53'" in proc.stderr and "syntax error" in proc.stderr


def _scrape(veth: VethPair, port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The metrics served inside the namespace, parsed by prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{port}/metrics"
    proc = subprocess.run(
        veth.exec("python3", "-c",
                  f"import urllib.request; print(urllib.request.urlopen({url!r}).read().decode())"),
        capture_output=True, text=True, check=True)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(proc.stdout) for s in family.samples}


def test_metrics_equal_the_printed_totals_and_sigterm_stops_cleanly(
        veth: VethPair, tmp_path: Path) -> None:
    port = 9464  # inside a namespace of this test's own: nothing else listens there
    sniffer = Sniffer(veth, tmp_path, "--metrics-port", str(port), "--interval", "200ms")
    try:
        status = Path(f"/proc/{sniffer.proc.pid}/status").read_text()
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        assert uid == str(_nobody()), "root was not dropped"
        veth.replay(MIX)
        deadline = time.monotonic() + 30
        while True:
            metrics = _scrape(veth, port)
            seen = sum(v for (name, _), v in metrics.items()
                       if name == "o365_traffic_packets_total")
            if seen == MIX_PACKETS or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert seen == MIX_PACKETS
        sniffer.signal(signal.SIGTERM)
        code, live = sniffer.result()
    finally:
        sniffer.kill()
    assert code == 0, sniffer.stderr
    _same_counts(live, analyze_json(MIX))
    for category, by_direction in live["directions"].items():
        for direction, totals in by_direction.items():
            labels = (("category", category), ("direction", direction))
            assert metrics[("o365_traffic_packets_total", labels)] == totals["packets"]
            assert metrics[("o365_traffic_bytes_total", labels)] == totals["bytes"]
    assert metrics[("o365_traffic_kernel_received_packets_total", ())] == MIX_PACKETS
    assert metrics[("o365_traffic_kernel_dropped_packets_total", ())] == 0
    start = metrics[("o365_traffic_capture_start_time_seconds", ())]
    assert abs(start - time.time()) < 3600
    assert "series" in live  # --interval adds the time series, as for analyze


def test_written_files_add_up_to_the_live_totals(veth: VethPair, tmp_path: Path) -> None:
    # The files are written after root is dropped: in a directory the user can reach.
    out = Path(tempfile.mkdtemp(prefix="o365-live-"))
    try:
        shutil.chown(out, user="nobody")
        sniffer = Sniffer(veth, tmp_path, "--count", str(MIX_PACKETS), "--write",
                          str(out / "cap.pcap"), "--rotate", "20kB")
        try:
            veth.replay(MIX)
            code, live = sniffer.result()
        finally:
            sniffer.kill()
        files = sorted(out.iterdir())
        for f in files:
            shutil.copy(f, tmp_path)
    finally:
        shutil.rmtree(out)
    assert code == 0, sniffer.stderr
    assert [f.name for f in files] == [f"cap-{i:05d}.pcap" for i in range(len(files))]
    assert live["capture"]["files"] == [str(f) for f in files]
    assert len(files) == 6  # 103,357 bytes of packets (and 16 bytes a record) in 20 kB files
    assert all((tmp_path / f.name).stat().st_size <= 20_000 for f in files)
    # Flows are not compared: each file has its flow table, and flows cross files.
    _same_counts(analyze_json(*(tmp_path / f.name for f in files)), live, flows=False)


def test_sigint_stops_cleanly_with_nothing_captured(veth: VethPair, tmp_path: Path) -> None:
    sniffer = Sniffer(veth, tmp_path)
    try:
        sniffer.signal(signal.SIGINT)
        code, live = sniffer.result()
    finally:
        sniffer.kill()
    assert code == 0, sniffer.stderr
    assert live["totals"] == {"packets": 0, "bytes": 0}
    assert live["capture"]["received"] == 0


def test_duration_stops_the_capture(veth: VethPair, tmp_path: Path) -> None:
    sniffer = Sniffer(veth, tmp_path, "--duration", "1s")
    code, live = sniffer.result(timeout=30)
    assert code == 0, sniffer.stderr
    assert live["totals"]["packets"] == 0


def test_without_privilege_one_line(veth: VethPair) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not installed")
    argv = ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw",
            *_cli("sniff", "-i", "lo")]
    proc = subprocess.run(veth.exec(*argv), capture_output=True, text=True, check=False,
                          cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr == ("o365-traffic: error: capturing on lo needs root or CAP_NET_RAW "
                           "(run as root: the capture drops to --user once the socket is "
                           "open)\n")


def _cli(*args: str) -> list[str]:
    import sys

    return ["env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "classifier", *args]


def _nobody() -> int:
    import pwd

    return pwd.getpwnam("nobody").pw_uid


def test_live_table_refreshes_on_a_terminal(veth: VethPair, tmp_path: Path) -> None:
    """On a terminal (``script`` gives one) the rates table refreshes, then the final
    table is printed as analyze prints it, all after root was dropped."""
    if shutil.which("script") is None:
        pytest.skip("script (util-linux) not installed")
    typescript = tmp_path / "typescript"
    command = " ".join([*_cli("sniff", "-i", veth.inner, "--duration", "2", "--interval",
                              "300ms")])
    proc = subprocess.run(veth.exec("script", "-qefc", command, str(typescript)),
                          capture_output=True, text=True, check=False, cwd=ROOT, timeout=600)
    text = typescript.read_text(errors="replace")
    assert proc.returncode == 0, text
    assert "up Mbit/s" in text and "down Mbit/s" in text  # the live table
    assert "Office 365 traffic by category" in text  # the final one
    assert "kernel: received 0, dropped 0" in text
