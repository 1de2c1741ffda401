"""The ``o365-traffic`` command: parses options, calls the library, renders.

Every failure the user can cause is one line on stderr and a non-zero exit code:
2 for unusable input (rules, unreadable captures), 1 for a corrupt capture.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, NoReturn

import click

from . import __version__
from .errors import O365TrafficError
from .export import FlowWriter, write_series
from .measures import DEFAULT_INSIDE, Inside, parse_duration
from .pipeline import Options, expand_paths
from .pipeline import analyze as run_analysis
from .render import share, to_csv, to_json
from .result import AnalysisResult
from .rules import load_rules

PROG = "o365-traffic"


def _err(kind: str, message: str) -> None:
    click.echo(f"{PROG}: {kind}: {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """How much of a link is Office 365, and which part of it."""


@cli.command()
@click.argument("captures", nargs=-1, required=True)
@click.option("--rules", "rules_path", metavar="FILE",
              help="Rule set (TOML); default: the Office 365 2015 port table.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="Output format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write the output to FILE instead of stdout.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Processes for several captures [default: number of cores].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--scheduler", metavar="tcp://HOST:PORT",
              help="Run the tasks on this Dask distributed scheduler (the captures must be "
                   "readable by the workers at the same paths).")
@click.option("--glob", "pattern", default="*", show_default=True, metavar="PATTERN",
              help="Files to take from directories (searched recursively), e.g. '*.pcap*'.")
@click.option("--inside", "inside", multiple=True, metavar="CIDR",
              help="The user's network (repeatable) [default: the private ranges].")
@click.option("--interval", metavar="DURATION",
              help="Add a time series with this interval (1s, 100ms, 5m) to the output.")
@click.option("--flows", "flows_path", metavar="FILE",
              help="Write every flow to FILE (.parquet or .csv).")
@click.option("--series", "series_path", metavar="FILE",
              help="Write the time series to FILE (.parquet or .csv).")
@click.option("--max-flows", type=click.IntRange(min=16), default=100_000, show_default=True,
              help="Flows held at once; the least recently seen are flushed beyond it.")
@click.option("--idle-timeout", default="5m", show_default=True, metavar="DURATION",
              help="Flows idle this long are flushed.")
@click.option("--skip-damaged", is_flag=True,
              help="After a corrupt record or block, resynchronise and go on (skipped bytes "
                   "are counted) instead of stopping.")
@click.option("--categories-only", is_flag=True,
              help="Only the category totals (no directions, flows, rates, QoS): fastest.")
def analyze(captures: tuple[str, ...], rules_path: str | None, fmt: str, output: str | None,
            jobs: int | None, quiet: bool, scheduler: str | None, pattern: str,
            inside: tuple[str, ...],
            interval: str | None,
            flows_path: str | None, series_path: str | None, max_flows: int,
            idle_timeout: str, skip_damaged: bool, categories_only: bool) -> None:
    """Classify every packet of CAPTURES (files, directories, globs, or - for stdin)
    and report packets and wire bytes per Office 365 category, direction and flow."""
    try:
        rules = load_rules(rules_path)
    except O365TrafficError as exc:
        _err("error", str(exc))
        sys.exit(2)
    try:
        interval_ns = parse_duration(interval) if interval else None
        idle_ns = parse_duration(idle_timeout)
        nets = Inside(inside or DEFAULT_INSIDE).cidrs
    except ValueError as exc:
        _err("error", str(exc))
        sys.exit(2)
    writer = None
    if flows_path:
        try:
            writer = FlowWriter(flows_path, rules.categories)
        except O365TrafficError as exc:
            _err("error", str(exc))
            sys.exit(2)
    if categories_only and (interval or flows_path or series_path):
        _err("error", "--categories-only excludes --interval, --flows and --series")
        sys.exit(2)
    options = Options(inside=nets, interval_ns=interval_ns, max_flows=max_flows,
                      idle_timeout_ns=idle_ns, flow_sink=writer, details=not categories_only,
                      skip_damaged=skip_damaged)
    result = run_captures(captures, rules, options, pattern=pattern, jobs=jobs, quiet=quiet,
                          scheduler=scheduler)
    try:
        if writer is not None:
            writer.close()
        if series_path:
            write_series(series_path, result)
    except O365TrafficError as exc:
        _err("error", str(exc))
        sys.exit(2)
    report_problems(result)
    write_text({"json": to_json, "csv": to_csv, "table": _table}[fmt](result), output)
    sys.exit(result.exit_code)


def run_captures(captures: tuple[str, ...], rules: Any, options: Options, *, pattern: str,
                 jobs: int | None, quiet: bool, scheduler: str | None) -> AnalysisResult:
    """Analyse the captures named on the command line, with a progress bar; a failure
    that stops the analysis is one line and exit code 2."""
    files = expand_paths(captures, pattern=pattern)
    n_jobs = jobs if jobs is not None else (os.cpu_count() or 1)
    with _progress(files, quiet) as progress:
        try:
            return run_analysis(files, rules=rules, jobs=n_jobs, progress=progress,
                                options=options, scheduler=scheduler)
        except O365TrafficError as exc:
            _err("error", str(exc))
            sys.exit(2)


def report_problems(result: AnalysisResult) -> None:
    """Each capture's warnings and error, one line each, on stderr."""
    for capture in result.captures:
        for warning in capture.warnings:
            _err("warning", warning)
        if capture.error:
            _err("error", capture.error)


def write_text(text: str, output: str | None) -> None:
    """``text`` to the file ``output``, or to stdout."""
    if not output:
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        _err("error", f"{output}: cannot write: {exc.strerror or exc}")
        sys.exit(2)


@contextmanager
def _progress(files: list[str], quiet: bool) -> Iterator[Any]:
    """A progress bar on stderr, only for a terminal and only when not quiet."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    sizes = [os.path.getsize(f) for f in files if f != "-" and os.path.isfile(f)]
    total = sum(sizes) if len(sizes) == len(files) else None
    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
        TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
        console=_stderr_console(),
    ) as bar:
        task = bar.add_task("analysing", total=total)
        yield lambda n: bar.advance(task, n)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _table(result: AnalysisResult) -> str:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    totals = result.totals
    table = Table(title="Office 365 traffic by category",
                  caption=f"rules: {result.rules}; captures: {len(result.captures)}")
    table.add_column("category")
    table.add_column("packets", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("share", justify="right")
    for name, t in result.categories.items():
        table.add_row(escape(name), f"{t.packets:,}", _human_bytes(t.bytes),
                      f"{100 * share(t.bytes, totals.bytes):.1f}%")
    table.add_section()
    table.add_row("total", f"{totals.packets:,}", _human_bytes(totals.bytes), "100.0%")
    console = Console(file=None, record=True, width=100, force_terminal=False)
    with console.capture() as cap:
        console.print(table)
        if result.anomalies:
            console.print("anomalies: " + ", ".join(
                f"{k} {v:,}" for k, v in sorted(result.anomalies.items())))
    return cap.get()


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{n:,} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


def _register() -> None:
    from .cli_rules import rules_group

    cli.add_command(rules_group)


_register()

# Live capture: the ``sniff`` and ``interfaces`` commands live in their own module.
from .cli_live import interfaces, sniff  # noqa: E402  (they use the helpers above)

cli.add_command(sniff)
cli.add_command(interfaces)


def main() -> NoReturn:
    """Entry point: never lets a traceback reach the user."""
    code: int | str | None
    try:
        cli(prog_name=PROG)
        code = 0
    except SystemExit as exc:  # click ends every command so
        code = exc.code
    except KeyboardInterrupt:
        _err("error", "interrupted")
        code = 130
    except O365TrafficError as exc:
        _err("error", str(exc))
        code = 2
    except Exception as exc:
        _err("internal error", f"{type(exc).__name__}: {exc} (please report this)")
        code = 3
    _leave(code)


def _leave(code: int | str | None) -> NoReturn:
    """Exit with ``code`` once the output is flushed, without the interpreter's
    teardown: freeing numpy, the kernels and every module's objects one by one takes
    40-70 ms that a finished command has no use for (files and processes are closed
    by then, each by the code that opened it)."""
    if isinstance(code, str):
        click.echo(code, err=True)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        # A reader gone (``| head``): nothing more can reach it.
        with suppress(OSError, ValueError):
            stream.flush()
    os._exit(code or 0)


def _register_report() -> None:
    from .cli_report import report  # its own module: the report's options and renderers

    cli.add_command(report)


_register_report()
