"""Resource bounds: time and peak memory of the analysis on hostile-but-valid captures.

    python fuzz/bounds.py                 # every case, the heavy ones included
    python fuzz/bounds.py --only 10m-packets --keep /tmp/caps

Each case writes a capture (with numpy: millions of records take seconds), runs
``python -m classifier analyze --format json`` on it in a child process, checks that
every packet is counted, and prints the wall time and the child's peak resident set
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``, measured by a fresh parent so that nothing
else is in the figure). ``tests/test_hostile_inputs.py`` runs the light cases with a
limit; the figures of a full run are in ``fuzz/README.md``.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Measure",
    "deep_stack_frame",
    "measure",
    "write_deep_stacks",
    "write_huge_length_blocks",
    "write_huge_length_records",
    "write_min_packets",
]

TS = 1_428_312_600
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)

# The child reports its own figures: the analysis runs in a grandchild, so that the
# peak resident set of RUSAGE_CHILDREN is the analysis's alone.
_DRIVER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
json.dump({"seconds": time.perf_counter() - t, "returncode": p.returncode,
           "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
           "stdout": p.stdout, "stderr": p.stderr}, sys.stdout)
"""


@dataclass(frozen=True)
class Measure:
    """One run of the command line: its output and what it cost."""

    seconds: float
    peak_mb: float
    returncode: int
    stdout: str
    stderr: str

    def doc(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.stdout)
        return out


def measure(args: list[str], *, timeout: float = 600) -> Measure:
    """Run ``python -m classifier analyze --format json ARGS`` and measure it."""
    cmd = [sys.executable, "-m", "classifier", "analyze", "--format", "json", *args]
    proc = subprocess.run([sys.executable, "-c", _DRIVER, *cmd], capture_output=True,
                          text=True, timeout=timeout, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    r = json.loads(proc.stdout)
    return Measure(r["seconds"], r["maxrss_kb"] / 1024, r["returncode"], r["stdout"],
                   r["stderr"])


# ---- captures ------------------------------------------------------------------------


def _tcp_frame(size: int = 60) -> np.ndarray:
    """An Ethernet/IPv4/TCP frame from 10.0.0.1:40000 to 52.96.0.10:443 (https),
    padded to ``size`` bytes."""
    ip = (bytes((0x45, 0)) + (size - 14).to_bytes(2, "big") + bytes(4) + bytes((64, 6))
          + bytes(2) + bytes((10, 0, 0, 1)) + bytes((52, 96, 0, 10)))
    tcp = (40000).to_bytes(2, "big") + (443).to_bytes(2, "big") + bytes(8) + b"\x50\x10" \
        + bytes(6)
    frame = bytes(6) + bytes((2, 0, 0, 0, 0, 1)) + b"\x08\x00" + ip + tcp
    return np.frombuffer(frame.ljust(size, b"\0"), np.uint8)


def write_min_packets(path: Path, n: int, *, distinct_flows: bool = False,
                      step_us: int = 1, chunk: int = 1 << 20) -> int:
    """``n`` records of 60-byte TCP frames to port 443, ``step_us`` microseconds
    apart; with ``distinct_flows`` each has its own source address and port (``n``
    flows). Returns the file size."""
    frame = _tcp_frame(60)
    rec = 16 + 60
    with open(path, "wb") as fh:
        fh.write(PCAP_HEADER)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            idx = np.arange(start, start + m, dtype=np.int64)
            block = np.empty((m, rec), np.uint8)
            block[:, 16:] = frame
            head = block[:, :16].view("<u4")  # (m, 4): ts_sec ts_usec incl orig
            us = idx * step_us
            head[:, 0] = TS + us // 1_000_000
            head[:, 1] = us % 1_000_000
            head[:, 2] = 60
            head[:, 3] = 60
            if distinct_flows:
                src = (10 << 24) + idx // 50_000  # 10.x.y.z, 50,000 ports each
                block[:, 16 + 26 : 16 + 30] = src.astype(">u4").view(np.uint8).reshape(m, 4)
                port = 10_000 + idx % 50_000
                block[:, 16 + 34 : 16 + 36] = port.astype(">u2").view(np.uint8).reshape(m, 2)
            fh.write(block.tobytes())
    return path.stat().st_size


def deep_stack_frame(kind: str, depth: int) -> bytes:
    """An Ethernet frame carrying TCP to port 443 under ``depth`` VLAN tags (alternating
    802.1ad and 802.1Q) or MPLS labels."""
    tcp = (40000).to_bytes(2, "big") + (443).to_bytes(2, "big") + bytes(8) + b"\x50\x10" \
        + bytes(6)
    ip = (bytes((0x45, 0)) + (20 + len(tcp)).to_bytes(2, "big") + bytes(4) + bytes((64, 6))
          + bytes(2) + bytes((10, 0, 0, 1)) + bytes((52, 96, 0, 10))) + tcp
    if kind == "vlan":
        body, et = ip, 0x0800
        for i in range(depth):
            body = (i % 4096).to_bytes(2, "big") + et.to_bytes(2, "big") + body
            et = 0x88A8 if i % 2 else 0x8100
    elif kind == "mpls":
        labels = b"".join(((16 + i) << 12 | (i == depth - 1) << 8 | 64).to_bytes(4, "big")
                          for i in range(depth))
        body, et = labels + ip, 0x8847
    else:
        raise ValueError(kind)
    return bytes(6) + bytes((2, 0, 0, 0, 0, 1)) + et.to_bytes(2, "big") + body


def write_deep_stacks(path: Path, kind: str, depth: int, n: int) -> int:
    """``n`` records of :func:`deep_stack_frame`. Returns the file size."""
    frame = np.frombuffer(deep_stack_frame(kind, depth), np.uint8)
    rec = 16 + frame.size
    block = np.empty((n, rec), np.uint8)
    block[:, 16:] = frame
    head = block[:, :16].view("<u4")
    idx = np.arange(n)
    head[:, 0] = TS + idx // 1_000_000
    head[:, 1] = idx % 1_000_000
    head[:, 2] = frame.size
    head[:, 3] = frame.size
    path.write_bytes(PCAP_HEADER + block.tobytes())
    return path.stat().st_size


def write_huge_length_records(path: Path, n: int, *, big: int = 1000) -> int:
    """``n`` minimum records whose wire length is 0xFFFFFFFF, then ``big`` records
    of the largest captured length (256 KiB), then a record header claiming 0xFFFFFFFF
    captured bytes. Returns the file size."""
    frame = _tcp_frame(60)
    with open(path, "wb") as fh:
        fh.write(PCAP_HEADER)
        block = np.empty((n, 76), np.uint8)
        block[:, 16:] = frame
        head = block[:, :16].view("<u4")
        head[:, 0] = TS
        head[:, 1] = np.arange(n) % 1_000_000
        head[:, 2] = 60
        head[:, 3] = 0xFFFFFFFF
        fh.write(block.tobytes())
        payload = np.zeros(262144, np.uint8)
        payload[:60] = frame
        for i in range(big):
            fh.write(struct.pack("<IIII", TS + 1, i, 262144, 262144))
            fh.write(payload.tobytes())
        fh.write(struct.pack("<IIII", TS + 2, 0, 0xFFFFFFFF, 0xFFFFFFFF) + bytes(64))
    return path.stat().st_size


def write_huge_length_blocks(path: Path, n: int) -> int:
    """A pcapng capture: ``n`` enhanced packet blocks, then unknown blocks declaring
    lengths far past the end of the file. Returns the file size."""
    def block(btype: int, body: bytes, length: int | None = None) -> bytes:
        body += b"\0" * (-len(body) % 4)
        size = len(body) + 12 if length is None else length
        return struct.pack("<II", btype, size) + body + struct.pack("<I", size)

    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", 1, 0, 0))
    frame = _tcp_frame(60).tobytes()
    units = TS * 10**6
    epb = block(6, struct.pack("<IIIII", 0, units >> 32, units & 0xFFFFFFFF, 60, 60) + frame)
    with open(path, "wb") as fh:
        fh.write(shb + idb)
        fh.write(epb * n)
        fh.write(block(0x0BAD, bytes(20), 0xFFFFFFFC)[:32])
    return path.stat().st_size


# ---- the cases -----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    write: Callable[[Path], int]
    packets: int
    heavy: bool = False


CASES = [
    Case("1m-min-packets", lambda p: write_min_packets(p, 1_000_000), 1_000_000),
    Case("10m-min-packets", lambda p: write_min_packets(p, 10_000_000), 10_000_000, True),
    Case("2m-distinct-flows", lambda p: write_min_packets(p, 2_000_000, distinct_flows=True),
         2_000_000, True),
    Case("1m-seconds-apart", lambda p: write_min_packets(p, 1_000_000, step_us=10**6),
         1_000_000, True),
    Case("huge-length-records", lambda p: write_huge_length_records(p, 500_000), 501_000),
    Case("huge-length-blocks", lambda p: write_huge_length_blocks(p, 500_000), 500_000),
    Case("vlan-100-deep", lambda p: write_deep_stacks(p, "vlan", 100, 200_000), 200_000),
    Case("mpls-100-deep", lambda p: write_deep_stacks(p, "mpls", 100, 200_000), 200_000),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="time and peak memory per hostile capture")
    parser.add_argument("--only", action="append", choices=[c.name for c in CASES])
    parser.add_argument("--light", action="store_true", help="skip the heavy cases")
    parser.add_argument("--keep", type=Path, help="write the captures here and keep them")
    parser.add_argument("--jobs", default=None, help="passed to analyze -j")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="o365-bounds-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{'case':22} {'file MB':>8} {'packets':>11} {'seconds':>8} {'peak MB':>8}  exit")
    for case in CASES:
        if (args.only and case.name not in args.only) or (args.light and case.heavy):
            continue
        path = work / f"{case.name}.cap"
        size = case.write(path)
        extra = ["-j", args.jobs] if args.jobs else []
        m = measure([*extra, str(path)])
        counted = m.doc()["totals"]["packets"]
        flag = "" if counted == case.packets else f"  (expected {case.packets})"
        print(f"{case.name:22} {size / 2**20:8.1f} {counted:11,} {m.seconds:8.1f} "
              f"{m.peak_mb:8.0f}  {m.returncode}{flag}", flush=True)
        if not args.keep:
            path.unlink()


if __name__ == "__main__":
    main()
