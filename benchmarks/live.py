#!/usr/bin/env python3
"""Live capture: the highest replay rate each capturer sustains with under 0.1 % loss.

A veth pair in a network namespace of its own (as in ``tests/livenet.py``); tcpreplay
sends a synthetic mix (``make_mix.py``, headers-only frames: the packet rate is what
is measured) into one end at a fixed rate, and each capturer listens on the other:

* ``o365-traffic sniff`` with the af_packet backend (TPACKET_V3 ring) and with the
  scapy backend;
* ``tcpdump -w /dev/null`` (libpcap, writing nothing);
* a scapy ``sniff`` loop counting packets.

For each capturer the rates go up until one loses 0.1 % of the packets sent or more
(counted by the capturer once it is idle again, against tcpreplay's count); the last
rate that kept at least 99.9 % is the one reported, with the capturer's peak RSS and
CPU time. tcpreplay's achieved rate is printed beside the asked one: on a small machine
the replayer, not the capturer, may be the limit; packets per CPU-second of the
capturer then tell its own ceiling.

Usage (root; iproute2, tcpreplay, tcpdump)::

    python benchmarks/live.py --seconds 2 --rates 5000,10000,20000,50000,100000,200000,0

A rate of 0 means tcpreplay's ``--topspeed``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NS, OUTER, INNER = f"o3bench{os.getpid() % 10000}", "o3bencha", "o3benchb"

SCAPY_LOOP = r"""
import sys
from scapy.all import sniff
n = 0
def count(_):
    global n
    n += 1
print("ready", file=sys.stderr, flush=True)
sniff(iface=sys.argv[1], prn=count, store=False)  # until SIGINT
print(n)
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def setup() -> None:
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", OUTER, "mtu", "9000", "type", "veth", "peer", "name", INNER,
       "mtu", "9000")
    sh("ip", "link", "set", INNER, "netns", NS)
    for prefix, itf in (([], OUTER), (["ip", "netns", "exec", NS], INNER)):
        path = f"/proc/sys/net/ipv6/conf/{itf}/disable_ipv6"
        sh(*prefix, "sh", "-c", f"test ! -e {path} || echo 1 > {path}")
    sh("ip", "link", "set", OUTER, "up")
    sh("ip", "netns", "exec", NS, "ip", "link", "set", INNER, "up")


def teardown() -> None:
    sh("ip", "link", "del", OUTER, check=False)
    sh("ip", "netns", "del", NS, check=False)


def replay(capture: Path, pps: int) -> tuple[int, float]:
    """Packets sent and the rate tcpreplay achieved."""
    speed = ["--topspeed"] if pps == 0 else ["--pps", str(pps)]
    out = sh("tcpreplay", "-i", OUTER, *speed, str(capture)).stdout
    sent = int(re.search(r"Actual: (\d+) packets", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"([\d.]+) pps", out).group(1))  # type: ignore[union-attr]
    return sent, rate


def start(argv: list[str], ready: str, err: Path) -> subprocess.Popen[str]:
    with open(err, "w") as fh:
        proc = subprocess.Popen(["ip", "netns", "exec", NS, *argv], stdout=subprocess.PIPE,
                                stderr=fh, text=True, env={**os.environ,
                                                           "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 300
    while ready not in err.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{argv[0]} did not start: {err.read_text()}")
        time.sleep(0.1)
    time.sleep(0.3)
    return proc


def cpu(pid: int) -> int:
    """CPU time a process used (user + system), in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_idle(pid: int, quiet_s: float = 0.5, limit_s: float = 120.0) -> None:
    """Wait until a process has used no CPU for ``quiet_s`` seconds."""
    deadline = time.monotonic() + limit_s
    last = cpu(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = cpu(pid)
        if now == last:
            return
        last = now


def trial(tool: str, capture: Path, pps: int, seconds: float, tmp: Path) -> dict[str, float]:
    err = tmp / "err"
    if tool.startswith("o365"):
        backend = tool.split(":")[1]
        proc = start([sys.executable, "-m", "classifier", "sniff", "-i", INNER, "--backend",
                      backend, "--format", "json", "-q"], "capturing on", err)
    elif tool == "tcpdump":
        proc = start(["tcpdump", "-n", "-i", INNER, "-w", "/dev/null"], "listening on", err)
    else:
        proc = start([sys.executable, "-c", SCAPY_LOOP, INNER], "ready", err)
    before = cpu(proc.pid)
    sent, rate = replay(capture, pps)
    wait_idle(proc.pid)  # what is queued in the socket still counts
    cpu_s = (cpu(proc.pid) - before) / os.sysconf("SC_CLK_TCK")
    status = Path(f"/proc/{proc.pid}/status").read_text()
    hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
    rss_mb = int(hwm.group(1)) / 1024 if hwm else 0.0
    proc.send_signal(signal.SIGTERM if tool.startswith("o365") else signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    dropped = -1
    if tool.startswith("o365"):
        doc = json.loads(out)
        got = doc["totals"]["packets"]
        dropped = doc["capture"]["dropped"]
    elif tool == "tcpdump":
        text = err.read_text()
        got = int(re.search(r"(\d+) packets captured", text).group(1))  # type: ignore[union-attr]
        dropped = int(re.search(r"(\d+) packets dropped by kernel", text).group(1))  # type: ignore[union-attr]
    else:
        got = int(out.split()[-1])
    return {"asked": pps, "achieved": rate, "sent": sent, "captured": got,
            "kernel_dropped": dropped, "loss": 1 - got / sent, "rss_mb": rss_mb, "cpu_s": cpu_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="replay length at each rate")
    ap.add_argument("--rates",
                    default="1000,2000,5000,10000,20000,50000,100000,200000,400000,800000,0")
    ap.add_argument("--tools", default="o365:af_packet,tcpdump,o365:scapy,scapy-loop")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    tools = args.tools.split(",")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        captures = {}
        for pps in rates:
            n = int((pps or 1_000_000) * args.seconds)
            path = tmp / f"mix-{n}.pcap"
            if not path.exists():
                sh(sys.executable, str(ROOT / "benchmarks" / "make_mix.py"), "--packets",
                   str(n), "--snaplen", "96", "-o", str(path), "-q")
            captures[pps] = path
        setup()
        try:
            best: dict[str, dict[str, float]] = {}
            for tool in tools:
                for pps in rates:
                    r = trial(tool, captures[pps], pps, args.seconds, tmp)
                    print(f"{tool:16} asked {pps or 'top':>8} achieved {r['achieved']:>11,.0f} "
                          f"pps  sent {r['sent']:>9,} captured {r['captured']:>9,} "
                          f"kernel dropped {r['kernel_dropped']:>8,} loss {100 * r['loss']:.3f} % "
                          f"peak RSS {r['rss_mb']:.0f} MB, "
                          f"{r['captured'] / max(r['cpu_s'], 0.01):,.0f} packets/CPU-s",
                          flush=True)
                    if r["loss"] >= 0.001:
                        break
                    best[tool] = r
            print("\n| capturer | highest rate with < 0.1 % loss (packets/s) |")
            print("|---|---:|")
            for tool in tools:
                r = best.get(tool)
                shown = f"{r['achieved']:,.0f}" if r else "below the first rate"
                print(f"| {tool} | {shown} |")
        finally:
            teardown()


if __name__ == "__main__":
    main()
