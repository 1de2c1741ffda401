#!/usr/bin/env python3
"""Time o365-traffic against its peers on the same captures, in one run.

Every tool runs as its own subprocess, so the peak RSS reported (from ``os.wait4``, the
child's own ``ru_maxrss``) is its own. Rounds alternate between the tools (round 1: all
tools, round 2: all tools, ...) so that a slow drift of the machine hits all of them
alike; the table shows the median time over the rounds and the highest peak RSS. The
captures are read again before every timed run, so that every tool reads them from the
page cache: on a shared VM the host can take the cache back between two runs (seen
here: 10 GB of cached captures dropped within minutes), and a run that reads from the
disk measures the disk. The output says how many of those re-reads found a capture
evicted.

Tools (``--only`` takes these names, comma separated; ``ours`` means both of ours):

==============  =============================================================  =========
name            what runs                                                      timed
==============  =============================================================  =========
ours-cli        ``o365-traffic analyze --format json --quiet FILE``            command
ours-steady     ``benchmarks/steady_state.py FILE``: ``classifier.analyze``    in-process
                after a warm-up (compiled kernels loaded)
cat             ``cat FILE`` to /dev/null: the floor, reading the file         command
dpkt            ``benchmarks/peers/dpkt_loop.py FILE``: dpkt reads records,    command
                headers parsed with struct (the reference decoder)
dpkt-objects    the same loop with ``--decode objects``: dpkt's Ethernet/IP/   command
                TCP/UDP classes, as a typical dpkt script
scapy           ``benchmarks/peers/scapy_loop.py FILE --limit N``; its rate    in-process,
                on the first N packets is extrapolated to the whole file       N packets
ndpi            ``ndpiReader -i FILE`` (full-payload captures only: on a       command
                headers-only capture it skips the truncated packets)
tshark          ``tshark -n -r FILE -q -z io,stat,0,<filters>``: one display   command
                filter per rule of the rule set, first match wins, plus
                other and non-ip: a port classification done by tshark
==============  =============================================================  =========

Peers that are not installed are skipped with a note. Rates: packets/s is the
capture's packet count over the time; MB/s is capture-file megabytes (10^6) over the
time; "ours ÷ peer" is our command's packets/s over the peer's (> 1: ours is faster).

Usage::

    python benchmarks/run.py /tmp/bench/mix-2m.pcap /tmp/bench/mix-2m-96.pcap --rounds 3
    python benchmarks/run.py FILE --only ours,cat --rounds 5 --markdown
    python benchmarks/run.py --jobs-check /tmp/bench/jobs --rounds 3
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import json
import mmap
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / "peers"

TOOL_ORDER = ["ours-cli", "ours-steady", "cat", "dpkt", "dpkt-objects", "scapy", "ndpi",
              "tshark"]
ALIASES = {"ours": ["ours-cli", "ours-steady"], "dpkt-all": ["dpkt", "dpkt-objects"]}
TITLES = {
    "ours-cli": "o365-traffic (command)",
    "ours-steady": "o365-traffic (in-process, warm)",
    "cat": "cat > /dev/null (floor)",
    "dpkt": "dpkt loop (struct headers)",
    "dpkt-objects": "dpkt loop (dpkt objects)",
    "scapy": "scapy loop",
    "ndpi": "ndpiReader",
    "tshark": "tshark (port filters)",
}


# ---------------------------------------------------------------------------------------
# Captures


@dataclass
class Capture:
    path: str
    file_bytes: int
    packets: int
    wire_bytes: int
    headers_only: bool  # some record holds fewer bytes than the frame had
    format: str
    compressed: bool = False


def capture_stats(path: str) -> Capture:
    """Packets, wire bytes and whether the capture is headers-only, from its records."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) == 4 and head[:2] != b"\x1f\x8b" and head != b"\x0a\x0d\x0d\x0a":
        magic = struct.unpack("<I", head)[0]
        order = {0xA1B2C3D4: "<", 0xA1B23C4D: "<", 0xD4C3B2A1: ">", 0x4D3CB2A1: ">"}.get(magic)
        if order is not None:
            return _pcap_stats(path, order, size)
    # pcapng, gzip or odd pcap: the reference reader counts it (slower, but exact).
    sys.path.insert(0, str(ROOT))
    from benchmarks.peers._tally import Tally
    from benchmarks.peers.dpkt_loop import Result, _open, _pcap_records, _pcapng_records

    res = Result(Tally(()))
    packets = wire = 0
    cut = False
    with _open(path) as fh:
        first = fh.read(4)
        fh.seek(0)
        recs = _pcapng_records(fh, res) if first == b"\x0a\x0d\x0d\x0a" else _pcap_records(fh, res)
        for _, _, data, orig in recs:
            packets += 1
            wire += orig
            cut = cut or len(data) < orig
    fmt = "pcapng" if first == b"\x0a\x0d\x0d\x0a" else "pcap"
    return Capture(path, size, packets, wire, cut, fmt, compressed=head[:2] == b"\x1f\x8b")


def _pcap_stats(path: str, order: str, size: int) -> Capture:
    rec = struct.Struct(order + "IIII")
    packets = wire = 0
    cut = False
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        off = 24
        unpack = rec.unpack_from
        while off + 16 <= size:
            _, _, incl, orig = unpack(m, off)
            if off + 16 + incl > size:
                break
            packets += 1
            wire += orig
            if incl < orig:
                cut = True
            off += 16 + incl
    return Capture(path, size, packets, wire, cut, "pcap")


# ---------------------------------------------------------------------------------------
# Running one tool


@dataclass
class Run:
    tool: str
    path: str
    round: int
    seconds: float | None  # time the rate is based on (extrapolated for scapy)
    wall: float  # the subprocess' wall time
    rss_kb: int
    cpu: float  # user + system seconds of the subprocess
    returncode: int
    packets_seen: int | None = None  # what the tool reported, for the check column
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


GNU_TIME = "/usr/bin/time"


def measure(cmd: Sequence[str], env: dict[str, str] | None = None,
            stdout_to_null: bool = False) -> tuple[float, int, float, int, str, str]:
    """Run ``cmd``; returns (wall seconds, peak RSS kB, CPU seconds, exit code, stdout,
    stderr).

    The peak RSS is the child's own ``ru_maxrss``. Linux keeps a process's high-water
    RSS across ``exec``, so a child forked straight from this (Python) runner would
    report at least the runner's own size; the command is therefore started through
    GNU time (a small C program) when it is installed, and its ``%M`` is used.
    Without it, ``os.wait4`` on the child gives the figure (a floor of the runner's
    RSS then applies)."""
    use_time = os.access(GNU_TIME, os.X_OK)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".time") as timing:
        full = [GNU_TIME, "-f", "%M %U %S", "-o", timing.name, *cmd] if use_time else list(cmd)
        start = time.perf_counter()
        proc = subprocess.Popen(
            full, stdout=subprocess.DEVNULL if stdout_to_null else out, stderr=err,
            stdin=subprocess.DEVNULL, env=env,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        rss, cpu = int(usage.ru_maxrss), usage.ru_utime + usage.ru_stime
        if use_time:
            fields = timing.read().split()
            try:  # the last line holds the figures (a failed command adds one before)
                rss = int(fields[-3])
                cpu = float(fields[-2]) + float(fields[-1])
            except (IndexError, ValueError):
                pass
        out.seek(0)
        err.seek(0)
        return (wall, rss, cpu, proc.returncode, out.read().decode("utf-8", "replace"),
                err.read().decode("utf-8", "replace"))


#: A re-read slower than this (bytes/s) came from the disk, not the page cache.
CACHED_RATE = 2e9


class Cache:
    """Keeps captures in the page cache between timed runs, and counts evictions."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        self.size = sum(os.path.getsize(p) for p in self.paths)
        self.rereads = 0
        self.evicted = 0

    def warm(self) -> None:
        """Read every capture (cheap when cached); note a read that came from disk."""
        start = time.perf_counter()
        for path in self.paths:
            measure(["cat", path], stdout_to_null=True)
        seconds = time.perf_counter() - start
        self.rereads += 1
        if self.size > 64e6 and self.size / seconds < CACHED_RATE:
            self.evicted += 1

    def note(self) -> str:
        return (f"Page cache: the captures were read again before each of {self.rereads} "
                f"timed runs; {self.evicted} of those re-reads found them evicted "
                "(read from disk, then timed from the cache).")


def ours_command() -> list[str]:
    """The installed command: the script pip wrote beside this interpreter first, as a
    virtual environment runs it (a version manager's shim found first on PATH, such as
    pyenv's, would add its own start-up of 0.05-0.1 s to every run), else on PATH."""
    local = Path(sys.executable).parent / "o365-traffic"
    if local.is_file() and os.access(local, os.X_OK):
        return [str(local)]
    exe = shutil.which("o365-traffic")
    return [exe] if exe else [sys.executable, "-m", "classifier"]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def tshark_filters(rules_path: str | None) -> list[str]:
    """One display filter per rule (that rule, and none before it), then other, non-ip."""
    sys.path.insert(0, str(ROOT))
    from classifier.rules import load_rules

    rules = load_rules(rules_path)

    def within(fld: str, ranges: Sequence[tuple[int, int]]) -> str:
        return "(" + " || ".join(
            f"{fld} == {lo}" if lo == hi else f"({fld} >= {lo} && {fld} <= {hi})"
            for lo, hi in ranges) + ")"

    matches = []
    for rule in rules.rules:
        parts = []
        for proto in rule.protocols:
            client, server = rule.client[proto], rule.server[proto]
            if not client or not server:
                continue
            a, b = f"{proto}.srcport", f"{proto}.dstport"
            parts.append(f"({within(a, client)} && {within(b, server)}) || "
                         f"({within(b, client)} && {within(a, server)})")
        matches.append("(" + " || ".join(parts) + ")" if parts else "frame.number == 0")
    cols = []
    for k, m in enumerate(matches):
        before = " || ".join(matches[:k])
        cols.append(f"{m} && !({before})" if before else m)
    cols.append(f"(ip || ipv6) && !({' || '.join(matches)})")
    cols.append("!(ip || ipv6)")
    return cols


def _tshark_frames(text: str) -> int | None:
    """Sum of the Frames columns of tshark's io,stat table (the data row)."""
    for line in text.splitlines():
        if "<>" in line and line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")][1:]
            try:
                return sum(int(c) for c in cells[0::2])
            except ValueError:
                return None
    return None


def _ndpi_packets(text: str) -> int | None:
    for line in text.splitlines():
        if "IP packets:" in line and "of" in line:
            try:
                return int(line.split("of")[1].split()[0])
            except (IndexError, ValueError):
                return None
    return None


def run_tool(tool: str, cap: Capture, rnd: int, opts: argparse.Namespace) -> Run:
    env = child_env()
    py = sys.executable
    rules = ["--rules", opts.rules] if opts.rules else []
    if tool == "ours-cli":
        cmd = [*ours_command(), "analyze", "--format", "json", "--quiet", *rules, cap.path]
    elif tool == "ours-steady":
        cmd = [py, str(HERE / "steady_state.py"), cap.path]
    elif tool == "cat":
        cmd = ["cat", cap.path]
    elif tool == "dpkt":
        cmd = [py, str(PEERS / "dpkt_loop.py"), *rules, cap.path]
    elif tool == "dpkt-objects":
        cmd = [py, str(PEERS / "dpkt_loop.py"), "--decode", "objects", *rules, cap.path]
    elif tool == "scapy":
        cmd = [py, str(PEERS / "scapy_loop.py"), "--limit", str(opts.scapy_limit), *rules,
               cap.path]
    elif tool == "ndpi":
        cmd = ["ndpiReader", "-i", cap.path]
    elif tool == "tshark":
        cmd = ["tshark", "-n", "-r", cap.path, "-q", "-z",
               "io,stat,0," + ",".join(tshark_filters(opts.rules))]
    else:  # pragma: no cover
        raise ValueError(tool)
    wall, rss, cpu, rc, out, err = measure(cmd, env, stdout_to_null=tool == "cat")
    run = Run(tool, cap.path, rnd, wall, wall, rss, cpu, rc)
    if rc != 0:
        run.error = (err.strip().splitlines() or [f"exit {rc}"])[-1][:200]
        run.seconds = None
        return run
    try:
        if tool in ("ours-cli", "dpkt", "dpkt-objects"):
            doc = json.loads(out)
            run.packets_seen = doc["totals"]["packets"]
            run.detail = {"categories": doc["categories"]}
        elif tool == "ours-steady":
            doc = json.loads(out)
            run.seconds = doc["seconds"]
            run.packets_seen = doc["packets"]
            run.detail = {"categories": doc["categories"], "warm_up": doc["warm_up_seconds"]}
        elif tool == "scapy":
            doc = json.loads(out)
            pps = doc["run"]["packets_per_s"]
            run.seconds = cap.packets / pps if pps else None
            run.packets_seen = doc["totals"]["packets"]
            run.detail = {"slice_packets": doc["totals"]["packets"],
                          "slice_seconds": doc["run"]["seconds"]}
        elif tool == "tshark":
            run.packets_seen = _tshark_frames(out)
        elif tool == "ndpi":
            run.packets_seen = _ndpi_packets(out)
        elif tool == "cat":
            run.packets_seen = cap.packets
    except (ValueError, KeyError, TypeError) as exc:
        run.error = f"unexpected output: {exc}"
    return run


def available(tool: str, cap: Capture | None) -> str | None:
    """None if the tool can run (on this capture), else why not."""
    if tool == "ndpi":
        if shutil.which("ndpiReader") is None:
            return "ndpiReader not installed (Debian: libndpi-bin)"
        if cap is not None and cap.headers_only:
            return "skipped: headers-only capture (ndpiReader drops the truncated packets)"
        if cap is not None and cap.compressed:
            return "skipped: gzip capture (ndpiReader reads pcap/pcapng files only)"
    if tool == "tshark" and shutil.which("tshark") is None:
        return "tshark not installed"
    if tool == "cat" and shutil.which("cat") is None:
        return "cat not found"
    if tool in ("dpkt", "dpkt-objects"):
        try:
            import dpkt  # noqa: F401
        except ImportError:
            return "dpkt not installed (pip install dpkt)"
    if tool == "scapy":
        try:
            import scapy  # noqa: F401
        except ImportError:
            return "scapy not installed (pip install scapy)"
    if tool.startswith("ours"):
        try:
            import classifier
        except ImportError:
            sys.path.insert(0, str(ROOT))
            try:
                import classifier  # noqa: F401
            except ImportError:
                return "classifier package not importable"
    return None


# ---------------------------------------------------------------------------------------
# Summaries and tables


@dataclass
class Row:
    tool: str
    basis: str
    seconds: float | None
    pps: float | None
    mbps: float | None
    rss_mb: float | None
    ratio: float | None  # ours (command) packets/s over this tool's
    ratio_steady: float | None
    check: str
    rounds: int


BASIS = {"ours-steady": "in-process", "scapy": "in-process, first {n} pkts"}


def summarise(cap: Capture, runs: list[Run], tools: list[str], notes: dict[str, str],
              opts: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    rates: dict[str, float] = {}
    for tool in tools:
        mine = [r for r in runs if r.tool == tool and r.path == cap.path]
        good = [r for r in mine if r.error is None and r.seconds]
        if not good:
            why = notes.get(tool) or (mine[0].error if mine else "not run")
            rows.append(Row(tool, "", None, None, None, None, None, None, str(why), 0))
            continue
        secs = statistics.median(r.seconds for r in good if r.seconds is not None)
        rss = max(r.rss_kb for r in good) / 1024
        pps = cap.packets / secs
        rates[tool] = pps
        seen = {r.packets_seen for r in good}
        expected = cap.packets if tool != "scapy" else min(cap.packets, opts.scapy_limit)
        if seen == {expected}:
            check = "ok"
        elif tool == "ndpi":
            check = f"counted {sorted(seen, key=lambda x: x or 0)[-1]}"
        else:
            check = f"packets {seen} != {expected}"
        basis = BASIS.get(tool, "command").format(n=f"{opts.scapy_limit:,}")
        rows.append(Row(tool, basis, secs, pps, cap.file_bytes / secs / 1e6, rss, None, None,
                        check, len(good)))
    for row in rows:
        if row.pps:
            if "ours-cli" in rates:
                row.ratio = rates["ours-cli"] / row.pps
            if "ours-steady" in rates:
                row.ratio_steady = rates["ours-steady"] / row.pps
    return rows


def agreement(cap: Capture, runs: list[Run]) -> str | None:
    """Whether our command and the dpkt reference counted every category alike."""
    ours = next((r for r in runs if r.tool == "ours-cli" and r.path == cap.path
                 and r.error is None), None)
    ref = next((r for r in runs if r.tool == "dpkt" and r.path == cap.path
                and r.error is None), None)
    if ours is None or ref is None:
        return None
    a, b = ours.detail.get("categories"), ref.detail.get("categories")
    if a == b:
        return "o365-traffic and the dpkt reference agree on every category (packets, bytes)."
    assert a is not None and b is not None
    diff = [f"{k}: ours {a.get(k)} vs dpkt {b.get(k)}" for k in b if a.get(k) != b.get(k)]
    return "CATEGORY MISMATCH with the dpkt reference: " + "; ".join(diff)


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table_lines(cap: Capture, rows: list[Row], markdown: bool) -> list[str]:
    head = ["tool", "timed", "seconds", "packets/s", "MB/s", "peak RSS MB",
            "ours ÷ tool", "ours warm ÷ tool", "check"]
    body = [[TITLES[r.tool], r.basis, _fmt(r.seconds, ".2f"), _fmt(r.pps, ",.0f"),
             _fmt(r.mbps, ",.1f"), _fmt(r.rss_mb, ",.0f"), _fmt(r.ratio, ".2f"),
             _fmt(r.ratio_steady, ".2f"), r.check] for r in rows]
    title = (f"{Path(cap.path).name}: {cap.packets:,} packets, "
             f"{cap.wire_bytes / 1e6:,.0f} MB on the wire, {cap.file_bytes / 1e6:,.0f} MB "
             f"file{' (headers only)' if cap.headers_only else ''}")
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |",
                 "|" + "|".join("---" if i < 2 or i == 8 else "---:" for i in range(len(head)))
                 + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return lines
    widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(head)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for cells in body:
        lines.append("  ".join(
            c.ljust(w) if i in (0, 1, 8) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))))
    return lines


def print_rich(cap: Capture, rows: list[Row]) -> bool:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    title = (f"{Path(cap.path).name}: {cap.packets:,} packets, "
             f"{cap.file_bytes / 1e6:,.0f} MB file"
             f"{' (headers only)' if cap.headers_only else ''}")
    table = Table(title=title)
    for name in ("tool", "timed"):
        table.add_column(name)
    for name in ("seconds", "packets/s", "MB/s", "peak RSS MB", "ours ÷ tool",
                 "ours warm ÷ tool"):
        table.add_column(name, justify="right")
    table.add_column("check")
    for r in rows:
        table.add_row(TITLES[r.tool], r.basis, _fmt(r.seconds, ".2f"), _fmt(r.pps, ",.0f"),
                      _fmt(r.mbps, ",.1f"), _fmt(r.rss_mb, ",.0f"), _fmt(r.ratio, ".2f"),
                      _fmt(r.ratio_steady, ".2f"), r.check)
    Console(width=None if sys.stdout.isatty() else 170).print(table)
    return True


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{model}, {os.cpu_count()} cores{mem}; Python {platform.python_version()}; "
            f"{dt.date.today().isoformat()}")


# ---------------------------------------------------------------------------------------
# Main modes


def select_tools(only: str | None) -> list[str]:
    if not only:
        return list(TOOL_ORDER)
    wanted: list[str] = []
    for name in (n.strip() for n in only.split(",") if n.strip()):
        for t in ALIASES.get(name, [name]):
            if t not in TOOL_ORDER:
                raise SystemExit(f"run.py: unknown tool {name!r} (tools: "
                                 f"{', '.join(TOOL_ORDER)}, or ours)")
            if t not in wanted:
                wanted.append(t)
    return [t for t in TOOL_ORDER if t in wanted]


def bench(opts: argparse.Namespace) -> int:
    tools = select_tools(opts.only)
    caps = [capture_stats(p) for p in opts.captures]
    all_runs: list[Run] = []
    notes: dict[str, dict[str, str]] = {}
    plan: dict[str, list[str]] = {}
    for cap in caps:
        notes[cap.path] = {}
        plan[cap.path] = []
        for t in tools:
            why = available(t, cap)
            if why:
                notes[cap.path][t] = why
            else:
                plan[cap.path].append(t)
    caches = {cap.path: Cache([cap.path]) for cap in caps}
    load_before = os.getloadavg()[0]
    for rnd in range(1, opts.rounds + 1):
        for cap in caps:
            for t in plan[cap.path]:
                caches[cap.path].warm()
                run = run_tool(t, cap, rnd, opts)
                all_runs.append(run)
                if not opts.quiet:
                    what = (f"{run.seconds:.2f} s" if run.seconds else f"failed: {run.error}")
                    if t == "scapy" and run.seconds:
                        what += " (extrapolated)"
                    print(f"round {rnd}: {Path(cap.path).name}: {t}: {what}, "
                          f"RSS {run.rss_kb / 1024:.0f} MB", file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0]
    print(f"Machine: {machine()}. Rounds: {opts.rounds} (median time, highest RSS). "
          f"Load average (1 min) {load_before:.2f} before, {load_after:.2f} after.")
    print()
    results: dict[str, Any] = {"machine": machine(), "rounds": opts.rounds, "captures": [],
                               "load": [load_before, load_after]}
    for cap in caps:
        rows = summarise(cap, all_runs, tools, notes[cap.path], opts)
        if opts.markdown or not print_rich(cap, rows):
            print("\n".join(table_lines(cap, rows, opts.markdown)))
        agree = agreement(cap, all_runs)
        if agree:
            print()
            print(agree)
        for t, why in notes[cap.path].items():
            print(f"- {TITLES[t]}: {why}")
        print(caches[cap.path].note())
        print()
        results["captures"].append({"capture": asdict(cap), "rows": [asdict(r) for r in rows],
                                    "agreement": agree, "notes": notes[cap.path]})
    if opts.json:
        results["runs"] = [asdict(r) for r in all_runs]
        Path(opts.json).write_text(json.dumps(results, indent=2))
    return 0


def jobs_check(opts: argparse.Namespace) -> int:
    """Time ``analyze --jobs 1`` against ``--jobs 2`` on a set of captures, or on one
    large capture (split into byte ranges): the whole command, and in-process."""
    files: list[str] = []
    for p in opts.jobs_check:
        if os.path.isdir(p):
            files += sorted(str(f) for f in Path(p).iterdir()
                            if f.is_file() and f.suffix in (".pcap", ".pcapng", ".gz", ".cap"))
        else:
            files.append(p)
    if not files:
        raise SystemExit("run.py: --jobs-check found no captures")
    caps = [capture_stats(f) for f in files]
    packets = sum(c.packets for c in caps)
    size = sum(c.file_bytes for c in caps)
    cache = Cache(files)
    times: dict[int, list[float]] = {1: [], 2: []}
    steady: dict[int, list[float]] = {1: [], 2: []}
    rss: dict[int, int] = {1: 0, 2: 0}
    outputs: dict[int, Any] = {}
    rules = ["--rules", opts.rules] if opts.rules else []
    py = sys.executable
    sys.path.insert(0, str(HERE))
    from side_by_side import _sequential_reads, _together

    machine_ratio: list[float] = []
    for rnd in range(1, opts.rounds + 1):
        # What two processes can do here against one, measured in the same minute:
        # the speed-ups below are bounded by it on a shared VM.
        machine_ratio.append(2 * _together(_sequential_reads, 1)
                             / _together(_sequential_reads, 2))
        for jobs in (1, 2):
            cmd = [*ours_command(), "analyze", "--jobs", str(jobs), "--format", "json",
                   "--quiet", *rules, *files]
            cache.warm()
            wall, kb, _, rc, out, err = measure(cmd, child_env())
            if rc != 0:
                print(f"--jobs {jobs} failed: {err.strip()[-300:]}", file=sys.stderr)
                return 1
            times[jobs].append(wall)
            rss[jobs] = max(rss[jobs], kb)
            outputs[jobs] = json.loads(out)
            cmd = [py, str(HERE / "steady_state.py"), "--jobs", str(jobs), *files]
            cache.warm()
            _, _, _, rc, out, err = measure(cmd, child_env())
            if rc != 0:
                print(f"steady state --jobs {jobs} failed: {err.strip()[-300:]}",
                      file=sys.stderr)
                return 1
            steady[jobs].append(float(json.loads(out)["seconds"]))
            if not opts.quiet:
                print(f"round {rnd}: --jobs {jobs}: {wall:.2f} s command, "
                      f"{steady[jobs][-1]:.2f} s in-process (machine ceiling "
                      f"{machine_ratio[-1]:.2f})", file=sys.stderr, flush=True)
    same = outputs[1] == outputs[2]
    print(f"Machine: {machine()}. Rounds: {opts.rounds} (median time).")
    ceiling = statistics.median(machine_ratio)
    print(f"The machine's own ceiling in the same rounds (side_by_side.py's sequential "
          f"reads, 2 processes against 1): {ceiling:.2f} (median; "
          f"{min(machine_ratio):.2f}-{max(machine_ratio):.2f}).")
    what = "1 capture (split into byte ranges)" if len(files) == 1 else f"{len(files)} captures"
    print(f"{what}, {packets:,} packets, {size / 1e6:,.0f} MB")
    print()
    head = ["jobs", "command s", "packets/s", "MB/s", "peak RSS MB", "speed-up",
            "in-process s", "in-process speed-up"]
    med = {j: statistics.median(t) for j, t in times.items()}
    warm = {j: statistics.median(t) for j, t in steady.items()}
    body = [[str(j), f"{med[j]:.2f}", f"{packets / med[j]:,.0f}", f"{size / med[j] / 1e6:,.1f}",
             f"{rss[j] / 1024:,.0f}", f"{med[1] / med[j]:.2f}", f"{warm[j]:.2f}",
             f"{warm[1] / warm[j]:.2f}"] for j in (1, 2)]
    if opts.markdown:
        print("| " + " | ".join(head) + " |")
        print("|---:" * len(head) + "|")
        for cells in body:
            print("| " + " | ".join(cells) + " |")
    else:
        widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(head)]
        print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
        for cells in body:
            print("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    print()
    # The same round's two runs are minutes apart at most: their ratio is the
    # speed-up least disturbed by the machine's drift.
    for name, runs in (("command", times), ("in-process", steady)):
        paired = [a / b for a, b in zip(runs[1], runs[2], strict=True)]
        at_least = sum(r >= 1.7 for r in paired)
        print(f"Speed-up round by round, {name}: median {statistics.median(paired):.2f}, "
              f"{min(paired):.2f}-{max(paired):.2f}; at least 1.7 in {at_least} of "
              f"{len(paired)} rounds.")
    print("Results of --jobs 1 and --jobs 2 (the whole JSON) are "
          + ("identical." if same else f"DIFFERENT: {_difference(outputs[1], outputs[2])}."))
    print("(Peak RSS is the largest single process: with --jobs 2 the workers' RSS add up.)")
    print(cache.note())
    return 0 if same else 1


def _difference(one: dict[str, Any], two: dict[str, Any]) -> str:
    """Which parts of two results differ, and why when it is the flow table's bound."""
    # The tree measured, whether installed or not (as the commands run it).
    sys.path.insert(0, str(ROOT))
    from classifier.pipeline import Options

    parts = sorted(k for k in one.keys() | two.keys() if one.get(k) != two.get(k))
    flows = int(one.get("flows_summary", {}).get("flows", 0))
    bound = Options().max_flows
    if set(parts) <= {"flows_summary", "qos"} and flows > bound:
        return (f"in {', '.join(parts)} only ({flows:,} flows outnumber the flow table's "
                f"bound, --max-flows {bound:,}: which flows are flushed early depends on "
                "the table's contents)")
    return "in " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time o365-traffic against its peers on the same captures.")
    parser.add_argument("captures", nargs="*", help="capture files to time the tools on")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default %(default)s)")
    parser.add_argument("--only", help=f"comma-separated tools: {', '.join(TOOL_ORDER)}, ours")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--json", metavar="FILE", help="also write every measurement as JSON")
    parser.add_argument("--scapy-limit", type=int, default=20_000,
                        help="packets the scapy loop reads (default %(default)s)")
    parser.add_argument("--rules", help="rule set file for every tool (default: shipped)")
    parser.add_argument("--jobs-check", nargs="+", metavar="DIR",
                        help="time 'analyze --jobs 1' vs '--jobs 2' on these captures/dirs "
                             "(one capture: split into byte ranges)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    opts = parser.parse_args(argv)
    if opts.rounds < 1:
        parser.error("--rounds must be at least 1")
    # The package's bytecode as an install leaves it: an editable checkout run with
    # PYTHONDONTWRITEBYTECODE would compile its changed modules again in every run.
    compileall.compile_dir(str(ROOT / "classifier"), quiet=1)
    if opts.jobs_check:
        return jobs_check(opts)
    if not opts.captures:
        parser.error("give capture files, or --jobs-check DIR")
    return bench(opts)


if __name__ == "__main__":
    raise SystemExit(main())
