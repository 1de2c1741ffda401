"""Live capture, the parts that need no privilege: the ring walk on hand-made blocks,
the capture-file writer and its rotation, and the command's one-line errors."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from classifier import analyze, load_rules
from classifier.live import LiveRun, LiveSource, LiveStats
from classifier.live.ring import walk_block
from classifier.live.writer import PcapWriter, parse_rotation
from classifier.lookup import compile_rules
from classifier.sources import open_capture
from classifier.sources.batch import Batch

ROOT = Path(__file__).resolve().parent.parent
IP = bytes.fromhex("45000028000100004006000008080808c0a80001") + bytes(20)
MACS = bytes(range(1, 13))


def _block(packets: list[dict[str, object]]) -> np.ndarray:
    """A TPACKET_V3 block as the kernel fills it (struct tpacket_block_desc, then
    tpacket3_hdr + sockaddr_ll + data for each packet)."""
    ring = bytearray(4096)
    first = 48
    struct.pack_into("<II", ring, 12, len(packets), first)
    at = first
    for i, p in enumerate(packets):
        data = p["data"]
        assert isinstance(data, bytes)
        mac = 80
        size = (mac + len(data) + 15) // 16 * 16
        nxt = size if i + 1 < len(packets) else 0
        struct.pack_into("<IIIIIIHH", ring, at, nxt, 7, 5, len(data), len(data) + 10,
                         p.get("status", 1), mac, mac)
        struct.pack_into("<IIH", ring, at + 28, 0, p.get("tci", 0), p.get("tpid", 0))
        # struct sockaddr_ll: family, protocol (network order), ifindex, hatype, pkttype,
        # halen, addr.
        struct.pack_into("<H2sIHBB8s", ring, at + 48, 17, b"\x08\x00", 3, 1, 4, 6,
                         bytes.fromhex("aabbccddeeff"))
        ring[at + mac:at + mac + len(data)] = data
        at += size
    return np.frombuffer(ring, np.uint8).copy()


def _walk(ring: np.ndarray, cooked: bool) -> list[tuple[bytes, int, int]]:
    out = np.zeros(8192, np.uint8)
    cols = [np.zeros(8, np.int64) for _ in range(4)]
    pos, n = walk_block.compiled(ring, 0, cooked, out, 0, *cols, 0)
    offset, caplen, wirelen, ts = cols
    assert ts[:n].tolist() == [7_000_000_005] * n
    assert pos == int(caplen[:n].sum())
    return [(bytes(out[o:o + c]), int(c), int(w))
            for o, c, w in zip(offset[:n], caplen[:n], wirelen[:n], strict=True)]


def test_ring_walk_puts_back_the_vlan_tags_the_kernel_took_out() -> None:
    plain = MACS + b"\x08\x00" + IP
    tagged = {"data": plain, "status": 1 | 0x10 | 0x40, "tci": 100, "tpid": 0x88A8}
    got = _walk(_block([{"data": plain}, tagged]), cooked=False)
    assert got[0] == (plain, len(plain), len(plain) + 10)
    frame = MACS + b"\x88\xa8\x00\x64" + b"\x08\x00" + IP
    assert got[1] == (frame, len(plain) + 4, len(plain) + 14)


def test_ring_walk_writes_a_cooked_header_on_a_cooked_socket() -> None:
    got = _walk(_block([{"data": IP}]), cooked=True)
    # packet type 4 (outgoing), ARPHRD 1, 6 address bytes, padded to 8, protocol.
    header = bytes.fromhex("0004 0001 0006 aabbccddeeff0000 0800")
    assert got == [(header + IP, 16 + len(IP), 16 + len(IP) + 10)]


def _batch(n: int, gap_ns: int, size: int = 100) -> Batch:
    frames = [MACS + b"\x08\x00" + IP + bytes([i]) * (size - 14 - len(IP)) for i in range(n)]
    buf = np.frombuffer(b"".join(frames), np.uint8).copy()
    caplen = np.full(n, size, np.int64)
    return Batch(buf, np.arange(n, dtype=np.int64) * size, caplen, caplen + 3,
                 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * gap_ns,
                 np.ones(n, np.int64), 0)


def _read(path: Path) -> list[tuple[bytes, int, int]]:
    out = []
    reader = open_capture(str(path))
    for b in reader:
        for i in range(len(b)):
            o, c = int(b.offset[i]), int(b.caplen[i])
            out.append((bytes(b.buf[o:o + c]), int(b.wirelen[i]), int(b.ts[i])))
    reader.source.close()
    return out


def _packets(batch: Batch) -> list[tuple[bytes, int, int]]:
    return [(bytes(batch.buf[o:o + c]), int(w), int(t)) for o, c, w, t in
            zip(batch.offset, batch.caplen, batch.wirelen, batch.ts, strict=True)]


def test_writer_rotates_by_time_and_keeps_every_packet(tmp_path: Path) -> None:
    batch = _batch(5, 500_000_000)  # 0, 0.5, 1.0, 1.5, 2.0 s
    writer = PcapWriter(str(tmp_path / "cap.pcap"), 1, parse_rotation("1s"))
    writer.write(batch)
    writer.close()
    assert [Path(f).name for f in writer.files] == [
        "cap-00000.pcap", "cap-00001.pcap", "cap-00002.pcap"]
    got = [_read(Path(f)) for f in writer.files]
    assert [len(g) for g in got] == [2, 2, 1]
    # Nanosecond timestamps and wire lengths kept.
    assert [p for g in got for p in g] == _packets(batch)


def test_writer_rotates_by_size_across_batches(tmp_path: Path) -> None:
    writer = PcapWriter(str(tmp_path / "cap.pcap"), 1, parse_rotation("1kB"))
    first, second = _batch(5, 1000), _batch(7, 1000)
    writer.write(first)
    writer.write(second)
    writer.close()
    # 24-byte file header, then 116-byte records: 8 in a 1000-byte file.
    sizes = [Path(f).stat().st_size for f in writer.files]
    assert sizes == [24 + 8 * 116, 24 + 4 * 116]
    got = [p for f in writer.files for p in _read(Path(f))]
    assert got == _packets(first) + _packets(second)


def test_writer_without_rotation_writes_the_name_given(tmp_path: Path) -> None:
    writer = PcapWriter(str(tmp_path / "one.pcap"), 1)
    writer.write(_batch(3, 10))
    writer.close()
    assert writer.files == [str(tmp_path / "one.pcap")]


@pytest.mark.parametrize(("text", "size", "ns"), [
    ("100MB", 100_000_000, None), ("1GiB", 1 << 30, None), ("20kB", 20_000, None),
    ("1h", None, 3_600_000_000_000), ("30s", None, 30_000_000_000)])
def test_rotation_is_a_size_or_a_duration(text: str, size: int | None, ns: int | None) -> None:
    rotation = parse_rotation(text)
    assert (rotation.max_bytes, rotation.max_ns) == (size, ns)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "classifier", *args], capture_output=True,
                          text=True, cwd=ROOT, check=False,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.mark.skipif(sys.platform != "linux", reason="interface names are Linux's")
def test_interfaces_lists_loopback_and_any() -> None:
    proc = _cli("interfaces")
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[1] for line in proc.stdout.splitlines()]
    assert names[0] == "any"
    assert "lo" in names


@pytest.mark.parametrize(("args", "message"), [
    (["-i", "no-such-if0"],
     "no interface named 'no-such-if0' (see 'o365-traffic interfaces')"),
    (["-i", "lo", "--rotate", "1h"], "--rotate needs --write"),
    (["-i", "lo", "--write", "x.pcap", "--rotate", "often"],
     "--rotate 'often': expected a size (100MB, 1GiB) or a duration (1h, 30m)"),
])
def test_sniff_usage_errors_are_one_line(args: list[str], message: str) -> None:
    proc = _cli("sniff", *args)
    assert proc.returncode == 2
    assert proc.stderr == f"o365-traffic: error: {message}\n"
    assert proc.stdout == ""


class _FileSource(LiveSource):
    """A live source replaying a capture file's batches (no privilege needed)."""

    backend = "file"
    linktype = 1

    def __init__(self, path: Path, max_packets: int = 50) -> None:
        self.interface = "replay0"
        self.filter = None
        self.stats = LiveStats()
        self.reader = open_capture(str(path), compiled=True, max_packets=max_packets)
        self.batches = iter(self.reader)
        self.delivered = 0

    def next_batch(self, timeout: float) -> Batch | None:
        batch = next(self.batches, None)
        if batch is not None:
            self.delivered += len(batch)
        return batch

    def kernel_counts(self) -> tuple[int, int]:
        delivered, self.delivered = self.delivered, 0
        return delivered, 0


MIX = ROOT / "pcaps" / "office365-mix.pcap"


@pytest.mark.parametrize("rule_set", [None, "office365-services"])
def test_a_live_run_counts_as_analyze_does(rule_set: str | None) -> None:
    """Batches from a live source go through the same counting and finishing; with
    rules that use server names, flows are named as in a file (batches of 50 packets,
    so handshakes wait across batches)."""
    rules = compile_rules(load_rules(rule_set))
    run = LiveRun(_FileSource(MIX), rules, count=345)
    run.run(tick=0.001)
    result, stats = run.finish()
    expected = analyze(str(MIX), rules=rule_set)
    if rule_set:
        assert result.to_dict()["categories"]["sip"]["packets"] > 0
    assert result.to_dict()["categories"] == expected.to_dict()["categories"]
    assert result.to_dict()["directions"] == expected.to_dict()["directions"]
    assert result.to_dict()["flows_summary"] == expected.to_dict()["flows_summary"]
    assert stats.received == 345
    assert run.snapshot.packets.tolist() == result.packets.tolist()


def test_count_stops_in_the_middle_of_a_batch(tmp_path: Path) -> None:
    rules = compile_rules(load_rules(None))
    source = _FileSource(MIX)
    first = tmp_path / "first.pcap"
    writer = PcapWriter(str(first), 1)
    run = LiveRun(source, rules, sink=writer, count=123)  # batches of 50
    run.run()
    writer.close()
    result, _ = run.finish()
    assert result.totals.packets == 123
    assert result.to_dict()["categories"] == analyze(str(first)).to_dict()["categories"]
    assert len(_read(first)) == 123


def test_a_stopped_run_still_finishes() -> None:
    rules = compile_rules(load_rules(None))
    run = LiveRun(_FileSource(MIX), rules)
    run.stop()
    run.run()  # what the source holds at the stop is still counted
    result, _ = run.finish()
    assert result.totals.packets == 345


def test_fragments_without_their_first_do_not_pile_up(tmp_path: Path) -> None:
    """A capture of months may see endless later fragments whose first never comes:
    they are counted as they leave the table (as ``other``), not held to the end."""
    n = 140_000  # more than two tables' worth of datagrams
    i = np.arange(n, dtype=np.int64)
    frames = np.zeros((n, 42), np.uint8)
    frames[:, 12:14] = (0x08, 0x00)
    frames[:, 14:24] = (0x45, 0, 0, 28, 0, 0, 0, 1, 64, 17)  # a fragment at byte 8
    frames[:, 18], frames[:, 19] = i >> 8 & 0xFF, i & 0xFF  # identification
    frames[:, 26:30] = np.stack([np.full(n, 10), i >> 16, np.zeros(n), np.ones(n)], 1)
    frames[:, 30:34] = (192, 168, 0, 1)
    caplen = np.full(n, 42, np.int64)
    writer = PcapWriter(str(tmp_path / "frags.pcap"), 1)
    writer.write(Batch(frames.reshape(-1), i * 42, caplen, caplen,
                       1_700_000_000_000_000_000 + i * 1000, np.ones(n, np.int64), 0))
    writer.close()
    source = _FileSource(tmp_path / "frags.pcap", max_packets=10_000)
    run = LiveRun(source, compile_rules(load_rules(None)), count=n)
    peak = 0
    take = run._take

    def watched(batch: Batch) -> bool:
        nonlocal peak
        done = take(batch)
        peak = max(peak, len(run.fragments.dropped))
        return done

    run._take = watched  # type: ignore[method-assign]
    run.run()
    result, _ = run.finish()
    assert peak < 65_536
    assert run.orphans > 0
    expected = analyze(str(tmp_path / "frags.pcap"))
    assert result.categories == expected.categories
    assert result.categories["other"].packets == n
    assert result.anomalies == expected.anomalies
    assert result.anomalies["fragment-without-first"] == n
