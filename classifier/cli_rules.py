"""``o365-traffic rules``: show, check and import rule sets."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import O365TrafficError
from .rules import PROTOCOLS, Rule, RuleSet, load_rules, rules_dir

PROG = "o365-traffic"


def _err(message: str) -> None:
    click.echo(f"{PROG}: error: {message}", err=True)


@click.group("rules")
def rules_group() -> None:
    """Show, check and import rule sets."""


@rules_group.command("show")
@click.argument("file", required=False)
@click.option("--all", "show_all", is_flag=True,
              help="List every name and prefix, not the first few of each rule.")
def show(file: str | None, show_all: bool) -> None:
    """Print rule set FILE (default: the Office 365 2015 table) as a table. FILE may be
    a TOML rule set, a shipped set's name (teams, office365-services) or a downloaded
    Microsoft endpoint list (.json)."""
    rules = _load(file)
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{rules.name}: {rules.description}"), show_lines=True,
                  caption=escape(f"source: {rules.source}") if rules.source else None)
    for column in ("#", "rule", "category"):
        table.add_column(column, no_wrap=True)
    for column in ("client ports", "server ports", "server names, signatures",
                   "server addresses"):
        table.add_column(column, overflow="fold")
    for n, rule in enumerate(rules.rules, 1):
        table.add_row(str(n), escape(rule.name), escape(rule.category), _ports(rule, "client"),
                      _ports(rule, "server"),
                      escape(_few((*rule.names, *(f"signature: {s}" for s in rule.signatures)),
                                  show_all)),
                      escape(_few(rule.address_texts, show_all)))
    console = Console()
    # Piped: wide enough for whole names; a terminal keeps its own width.
    Console(width=console.width if console.is_terminal else 180).print(table)


@rules_group.command("check")
@click.argument("file")
def check(file: str) -> None:
    """Validate rule set FILE: one line saying what it holds, or what is wrong (exit 2)."""
    rules = _load(file)
    n_names = sum(len(r.names) for r in rules.rules)
    n_prefixes = sum(len(r.addresses) for r in rules.rules)
    n_signed = sum(bool(r.signatures) for r in rules.rules)
    cats = len(rules.categories) - 2
    signed = f", {n_signed} with payload signatures" if n_signed else ""
    click.echo(f"{file}: ok: {len(rules.rules)} rules, {cats} categories, "
               f"{n_names} server names, {n_prefixes} address prefixes{signed}")


@rules_group.command("import-endpoints")
@click.argument("json_file", metavar="FILE.json")
@click.option("-o", "--output", metavar="FILE.toml",
              help="Write the rule set to this file instead of stdout.")
def import_endpoints(json_file: str, output: str | None) -> None:
    """Turn a downloaded copy of the Microsoft 365 endpoint web service JSON into a rule
    set (one rule per endpoint set; nothing is fetched)."""
    from .endpoints import endpoints_to_toml

    try:
        text = endpoints_to_toml(json_file)
    except O365TrafficError as exc:
        _err(str(exc))
        sys.exit(2)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        _err(f"{output}: cannot write: {exc.strerror or exc}")
        sys.exit(2)
    click.echo(f"{output}: written", err=True)


@rules_group.command("list")
def list_sets() -> None:
    """The shipped rule sets."""
    for path in sorted(rules_dir().glob("*.toml")):
        rules = load_rules(path)
        click.echo(f"{path.stem:24} {rules.description}")


def _load(file: str | None) -> RuleSet:
    try:
        return load_rules(file)
    except O365TrafficError as exc:
        _err(str(exc))
        sys.exit(2)


def _ports(rule: Rule, side: str) -> str:
    out = []
    for proto in PROTOCOLS:
        if proto not in rule.protocols:
            continue
        ranges = getattr(rule, side)[proto]
        text = ", ".join("any" if (lo, hi) == (0, 65535) else "ephemeral"
                         if (lo, hi) == (1024, 65535) else str(lo) if lo == hi
                         else f"{lo}-{hi}" for lo, hi in ranges)
        out.append(f"{proto.upper()} {text or '(none)'}")
    return "\n".join(out)


def _few(items: tuple[str, ...], show_all: bool, limit: int = 4) -> str:
    if show_all or len(items) <= limit:
        return "\n".join(items)
    return "\n".join(items[:limit]) + f"\n(+{len(items) - limit} more)"
