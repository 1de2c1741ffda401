"""The ``sniff`` and ``interfaces`` commands: live capture through the same pipeline."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from .cli import PROG, _err, _human_bytes, _stderr_console, _table
from .errors import O365TrafficError
from .measures import DEFAULT_INSIDE, DIRECTIONS, Inside, parse_duration
from .pipeline import Options
from .render import to_csv
from .result import AnalysisResult
from .rules import load_rules

__all__ = ["interfaces", "sniff"]

_UP, _DOWN = DIRECTIONS.index("upload"), DIRECTIONS.index("download")


@click.command()
@click.option("-i", "--interface", required=True, metavar="IFACE",
              help="Interface to capture on ('any': all of them; see 'interfaces').")
@click.option("--bpf", metavar="FILTER", help="Capture filter (libpcap syntax), run in the kernel.")
@click.option("--rules", "rules_path", metavar="FILE",
              help="Rule set (TOML); default: the Office 365 2015 port table.")
@click.option("--duration", metavar="DURATION", help="Stop after this long (10s, 10m, 2h).")
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Stop after N packets.")
@click.option("--interval", metavar="DURATION",
              help="Refresh the live table this often [default: 1s], and add a time series "
                   "with this interval to the output.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="Output format of the final result.")
@click.option("--write", "write_path", metavar="FILE.pcap",
              help="Also write the packets counted to FILE.pcap.")
@click.option("--rotate", metavar="SIZE|DURATION",
              help="With --write: a new file after this size (100MB) or time (1h).")
@click.option("--backend", type=click.Choice(["af_packet", "scapy"]), default="af_packet",
              show_default=True, help="af_packet: memory-mapped ring (Linux); scapy: portable.")
@click.option("--buffer", "buffer_size", default="64MiB", show_default=True, metavar="SIZE",
              help="Kernel ring size (af_packet).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), metavar="N",
              help="Serve Prometheus metrics on this port.")
@click.option("--metrics-bind", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Address the metrics are served on.")
@click.option("--user", default="nobody", show_default=True, metavar="USER",
              help="When run as root: the user to become once the capture is open.")
@click.option("--inside", "inside", multiple=True, metavar="CIDR",
              help="The user's network (repeatable) [default: the private ranges].")
@click.option("--max-flows", type=click.IntRange(min=16), default=100_000, show_default=True,
              help="Flows held at once; the least recently seen are flushed beyond it.")
@click.option("--idle-timeout", default="5m", show_default=True, metavar="DURATION",
              help="Flows idle this long are flushed.")
@click.option("-q", "--quiet", is_flag=True, help="No live table.")
def sniff(interface: str, bpf: str | None, rules_path: str | None, duration: str | None,
          count: int | None, interval: str | None, fmt: str, write_path: str | None,
          rotate: str | None, backend: str, buffer_size: str, metrics_port: int | None,
          metrics_bind: str, user: str, inside: tuple[str, ...], max_flows: int,
          idle_timeout: str, quiet: bool) -> None:
    """Classify live packets from IFACE until --duration, --count, Ctrl-C or SIGTERM,
    then report as 'analyze' does, with the packets received and dropped by the kernel."""
    from .live import (
        CaptureSetupError,
        LiveRun,
        PcapWriter,
        drop_privileges,
        interface_index,
        open_source,
        parse_rotation,
        warm_up,
    )

    try:
        rules = load_rules(rules_path)
    except O365TrafficError as exc:
        _fail(str(exc))
    try:
        tick_ns = parse_duration(interval) if interval else 1_000_000_000
        stop_ns = parse_duration(duration) if duration else None
        idle_ns = parse_duration(idle_timeout)
        nets = Inside(inside or DEFAULT_INSIDE).cidrs
        rotation = parse_rotation(rotate) if rotate else None
        ring = parse_rotation(buffer_size).max_bytes
        if ring is None:
            raise ValueError(f"--buffer {buffer_size!r}: expected a size (64MiB)")
    except ValueError as exc:
        _fail(str(exc))
    if rotate and not write_path:
        _fail("--rotate needs --write")
    try:
        if interface != "any":
            interface_index(interface)  # before the kernels load: a typo fails at once
    except CaptureSetupError as exc:
        _fail(str(exc))
    from .lookup import compile_rules

    compiled_rules = compile_rules(rules)
    options = Options(inside=nets, interval_ns=tick_ns if interval else None,
                      max_flows=max_flows, idle_timeout_ns=idle_ns)
    warm_up(compiled_rules, options)  # as root: numba's cache may need writing
    server = None
    try:
        source = open_source(interface, backend=backend, bpf=bpf, ring_bytes=ring)
    except CaptureSetupError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot capture on {interface}: {exc.strerror or exc}")
    try:
        if metrics_port is not None:
            try:
                from .live.metrics import serve_metrics

                server = serve_metrics(lambda: run.snapshot, interface, port=metrics_port,
                                       bind=metrics_bind)
            except ImportError:
                _fail("--metrics-port needs prometheus-client: pip install 'o365-traffic[live]'")
            except OSError as exc:
                _fail(f"--metrics-port {metrics_port}: cannot serve on {metrics_bind}: "
                      f"{exc.strerror or exc}")
        try:
            _preload(compiled_rules.categories)
            drop_privileges(user)
            writer = (PcapWriter(write_path, source.linktype, rotation)
                      if write_path else None)
        except O365TrafficError as exc:
            _fail(str(exc))
        run = LiveRun(source, compiled_rules, options, sink=writer, count=count,
                      duration=stop_ns / 1e9 if stop_ns is not None else None)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: run.stop())
        what = f" filter {bpf!r}," if bpf else ""
        _err("info", f"capturing on {interface} ({source.backend},{what} link type "
                     f"{source.linktype}); Ctrl-C stops")
        with _LiveTable(quiet) as show:
            run.run(tick=tick_ns / 1e9, on_tick=show)
        result, stats = run.finish()
        if writer is not None:
            writer.close()
    finally:
        source.close()
        if server is not None:
            server.shutdown()
    for capture in result.captures:
        for warning in capture.warnings:
            _err("warning", warning)
    capture_doc = {
        "interface": interface, "backend": source.backend, "filter": bpf,
        "link_type": source.linktype, "received": stats.received, "dropped": stats.dropped,
        "files": writer.files if writer is not None else [],
    }
    click.echo(_render(result, fmt, capture_doc), nl=False)


def _render(result: AnalysisResult, fmt: str, capture: dict[str, Any]) -> str:
    """The final result as 'analyze' renders it; JSON gains a ``capture`` section."""
    if fmt == "json":
        doc = result.to_dict()
        doc["capture"] = capture
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "csv":
        return to_csv(result)
    return _table(result) + (f"kernel: received {capture['received']:,}, "
                             f"dropped {capture['dropped']:,}\n")


def _preload(categories: tuple[str, ...]) -> None:
    """Render every kind of output once, to nowhere, while the installation's files are
    readable: the user dropped to may not read them (e.g. under /root), and rich
    imports some of its modules only when it first needs them."""
    import io
    from collections import Counter

    import numpy as np
    from rich.console import Console
    from rich.live import Live

    from .live import Snapshot

    k = len(categories)
    snap = Snapshot(categories, 1.0, np.zeros(k, np.int64), np.zeros(k, np.int64),
                    np.zeros((k, len(DIRECTIONS), 2), np.int64), 0, 0, 0.0)
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with Live(console=console, transient=True, auto_refresh=False) as live:
        live.update(_rates_table(snap, snap), refresh=True)
    result = AnalysisResult.empty("rules", categories)
    result.anomalies = Counter({"preload": 1})
    _render(result, "table", {"received": 0, "dropped": 0})
    _render(result, "csv", {})
    _render(result, "json", {})


def _fail(message: str) -> NoReturn:
    _err("error", message)
    sys.exit(2)


class _LiveTable:
    """A refreshing table of per-category rates on stderr, only on a terminal."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.live: Any = None
        self.last: Any = None

    def __enter__(self) -> Callable[[Any], None]:
        if self.enabled:
            from rich.live import Live

            self.live = Live(console=_stderr_console(), transient=True, auto_refresh=False)
            self.live.__enter__()
        return self.show

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def show(self, snap: Any) -> None:
        if self.live is None:
            return
        self.live.update(_rates_table(snap, self.last), refresh=True)
        self.last = snap


def _rates_table(snap: Any, last: Any) -> Any:
    from rich.table import Table

    span = snap.elapsed - (last.elapsed if last is not None else 0.0)
    table = Table(title=f"{PROG}: live, {snap.elapsed:,.0f} s",
                  caption=f"kernel: received {snap.received:,}, dropped {snap.dropped:,}")
    for name in ("category", "up Mbit/s", "down Mbit/s", "packets", "bytes"):
        table.add_column(name, justify="left" if name == "category" else "right")
    for i, name in enumerate(snap.categories):
        up = down = 0.0
        if snap.directions is not None and span > 0:
            prev = last.directions if last is not None else 0 * snap.directions
            up = 8 * (snap.directions[i, _UP, 1] - prev[i, _UP, 1]) / span / 1e6
            down = 8 * (snap.directions[i, _DOWN, 1] - prev[i, _DOWN, 1]) / span / 1e6
        table.add_row(name, f"{up:.3f}", f"{down:.3f}", f"{int(snap.packets[i]):,}",
                      _human_bytes(int(snap.bytes[i])))
    table.add_section()
    table.add_row("total", "", "", f"{int(snap.packets.sum()):,}",
                  _human_bytes(int(snap.bytes.sum())))
    return table


@click.command()
def interfaces() -> None:
    """List the interfaces one can capture on."""
    from .live import list_interfaces

    for itf in list_interfaces():
        click.echo(f"{itf.index:>4}  {itf.name:<16} {itf.kind:<24} {itf.state}")
