"""The ``o365-traffic report`` command: the bandwidth-planning report.

The same capture inputs and options as ``analyze``, the same library call
(:func:`classifier.pipeline.analyze`). The top flows and talkers come from a
:class:`~classifier.report.TopFlows` per capture or byte range (``Options.flow_digest``),
merged with the results, so every ``--jobs`` and ``--scheduler`` setting works.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import NoReturn

import click

from .errors import O365TrafficError
from .lookup import compile_rules
from .measures import DEFAULT_INSIDE, Inside, parse_duration
from .pipeline import Options
from .rules import load_rules

PROG = "o365-traffic"


def _fail(message: str) -> NoReturn:
    click.echo(f"{PROG}: error: {message}", err=True)
    sys.exit(2)


@click.command()
@click.argument("captures", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write the report to FILE instead of stdout.")
@click.option("--format", "fmt", type=click.Choice(["html", "md", "json", "csv"]),
              default="html", show_default=True, help="Report format.")
@click.option("--users", type=click.IntRange(min=1), metavar="N",
              help="Users behind the captured traffic (enables the projection).")
@click.option("--plan-users", type=click.IntRange(min=1), metavar="M",
              help="Users to plan the link for [default: --users].")
@click.option("--guidance", "level", type=click.Choice(["minimum", "recommended", "best"]),
              default="recommended", show_default=True,
              help="Microsoft's per-stream figures used by the bottom-up projection.")
@click.option("--top", type=click.IntRange(min=1, max=1000), default=20, show_default=True,
              help="Flows and talkers listed.")
@click.option("--interval", default="1s", show_default=True, metavar="DURATION",
              help="Interval of the rates and stream counts (1s, 100ms, 5m).")
@click.option("--inside", "inside", multiple=True, metavar="CIDR",
              help="The user's network (repeatable) [default: the private ranges].")
@click.option("--rules", "rules_path", metavar="FILE",
              help="Rule set (TOML); default: the Office 365 2015 port table.")
@click.option("--glob", "pattern", default="*", show_default=True, metavar="PATTERN",
              help="Files to take from directories (searched recursively), e.g. '*.pcap*'.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Processes for several captures or a large pcap "
                   "[default: number of cores].")
@click.option("--scheduler", metavar="tcp://HOST:PORT",
              help="Run the tasks on this Dask distributed scheduler.")
@click.option("--max-flows", type=click.IntRange(min=16), default=100_000, show_default=True,
              help="Flows held at once; the least recently seen are flushed beyond it.")
@click.option("--idle-timeout", default="5m", show_default=True, metavar="DURATION",
              help="Flows idle this long are flushed.")
@click.option("--skip-damaged", is_flag=True,
              help="After a corrupt record or block, resynchronise and go on.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def report(captures: tuple[str, ...], output: str | None, fmt: str, users: int | None,
           plan_users: int | None, level: str, top: int, interval: str,
           inside: tuple[str, ...], rules_path: str | None, pattern: str, jobs: int | None,
           scheduler: str | None, max_flows: int, idle_timeout: str, skip_damaged: bool,
           quiet: bool) -> None:
    """A bandwidth-planning report for CAPTURES (files, directories, globs, or -): what
    the link carries per category and direction, concurrent calls, Microsoft's per-stream
    guidance, the QoS audit, top flows and talkers, and with --users N --plan-users M
    the link capacity needed for M users, two ways."""
    from .cli import report_problems, run_captures, write_text  # (it imports this module)
    from .report import TopFlows, build_report, render_report

    if plan_users is not None and users is None:
        _fail("--plan-users needs --users (the users behind the captured traffic)")
    try:
        rules = load_rules(rules_path)
    except O365TrafficError as exc:
        _fail(str(exc))
    try:
        interval_ns = parse_duration(interval)
        idle_ns = parse_duration(idle_timeout)
        nets = Inside(inside or DEFAULT_INSIDE).cidrs
    except ValueError as exc:
        _fail(str(exc))
    options = Options(inside=nets, interval_ns=interval_ns, max_flows=max_flows,
                      idle_timeout_ns=idle_ns, flow_digest=partial(TopFlows, top=top),
                      skip_damaged=skip_damaged)
    result = run_captures(captures, rules, options, pattern=pattern, jobs=jobs, quiet=quiet,
                          scheduler=scheduler)
    report_problems(result)
    collector = result.digest or TopFlows(compile_rules(rules).categories, top=top)
    try:
        doc = build_report(result, collector, users=users, plan_users=plan_users, level=level)
        text = render_report(result, doc, fmt)
    except ValueError as exc:
        _fail(str(exc))
    write_text(text, output)
    sys.exit(result.exit_code)
