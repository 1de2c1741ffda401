"""Microsoft's endpoint list as a rule set.

The Microsoft 365 endpoint web service returns a JSON array of endpoint sets: ``id``,
``serviceArea`` (Common, Exchange, SharePoint, Skype), ``urls`` (names, ``*.``
wildcards), ``ips`` (IPv4 and IPv6 prefixes), ``tcpPorts`` and ``udpPorts`` (strings
such as ``"443,80"`` or ``"3478-3481"``, spaces and any order allowed), ``category``
(Optimize, Allow, Default), ``required``, ``expressRoute``, ``notes``; any of urls,
ips and the ports may be absent. A downloaded copy is read offline: nothing is
fetched.

Each set becomes a rule whose category is its service area and category
(``skype-optimize``, ``exchange-allow``, ...): its names and prefixes are the server
conditions, its ports the server ports (TCP and UDP; any client port). Optimize sets
come first, then Allow, then Default, each in id order, so the most specific wins.
Sets with neither names nor addresses name no server and are left out (a ports-only
rule would take every packet on those ports); sets with no ports match any port.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from .errors import RulesError
from .rules import _RANGE, RuleSet, parse_rules

__all__ = ["endpoints_to_data", "endpoints_to_toml", "load_endpoints"]

_ORDER = {"optimize": 0, "allow": 1, "default": 2}
_AREAS = {"common", "exchange", "sharepoint", "skype"}


def load_endpoints(path: str | Path) -> RuleSet:
    """Read a downloaded endpoint list (JSON) as a rule set."""
    return parse_rules(endpoints_to_data(_read_json(path), path=str(path)), path=str(path))


def endpoints_to_toml(path: str | Path) -> str:
    """The rule set file (TOML text) for a downloaded endpoint list."""
    data = endpoints_to_data(_read_json(path), path=str(path))
    parse_rules(data, path=str(path))  # what is written must load
    header = (
        f"# Imported from {Path(path).name}, a copy of the Microsoft 365 endpoint web service\n"
        "# list (o365-traffic rules import-endpoints). Each rule is one endpoint set; its\n"
        "# description names the set's id, service area and category.\n\n"
    )
    return header + tomli_w.dumps(data)


def _read_json(path: str | Path) -> Any:
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RulesError(name, f"cannot read: {exc.strerror or exc}") from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RulesError(name, f"not valid JSON: {str(exc)[:120]}") from None


def endpoints_to_data(doc: Any, *, path: str = "<endpoints>") -> dict[str, Any]:
    """The rule set (as :func:`~classifier.rules.parse_rules` takes it) for an
    endpoint list already parsed from JSON."""
    if not isinstance(doc, list):
        raise RulesError(path, "not an endpoint list: expected a JSON array of endpoint sets")
    entries = []
    for n, entry in enumerate(doc, 1):
        if not isinstance(entry, Mapping):
            raise RulesError(path, f"endpoint set #{n} is not an object")
        made = _entry(entry, n, path)
        if made is not None:
            entries.append(made)
    entries.sort(key=lambda e: (e[0], e[1]))
    rules = [rule for _, _, rule in entries]
    return {
        "name": Path(path).stem,
        "description": "Microsoft 365 endpoint sets (imported)",
        "source": f"Microsoft 365 endpoint web service, a copy read from {Path(path).name}",
        "rule": rules,
    }


def _entry(entry: Mapping[str, Any], n: int, path: str) -> tuple[int, int, dict[str, Any]] | None:
    raw_id = entry.get("id", n)
    if not isinstance(raw_id, int) or isinstance(raw_id, bool):
        raise RulesError(path, f"endpoint set #{n}: 'id' must be an integer")
    where = f"id {raw_id}"
    area = _text(entry.get("serviceArea", "common"), path, where, "serviceArea").lower()
    category = _text(entry.get("category", "default"), path, where, "category").lower()
    if area not in _AREAS:
        area = "".join(c if c.isalnum() else "-" for c in area)[:40] or "other"
    if category not in _ORDER:
        raise RulesError(path, f"{where}: unknown category {category[:40]!a} "
                               "(Optimize, Allow or Default)")
    urls = _list(entry.get("urls", []), path, where, "urls")
    ips = _list(entry.get("ips", []), path, where, "ips")
    if not urls and not ips:
        return None
    tcp = _ports(entry.get("tcpPorts"), path, where, "tcpPorts")
    udp = _ports(entry.get("udpPorts"), path, where, "udpPorts")
    if not tcp and not udp:
        tcp = udp = ["any"]
    rule: dict[str, Any] = {
        "name": f"{area}-{raw_id}",
        "category": f"{area}-{category}",
        "description": _describe(entry, raw_id, area, category),
        "protocols": [p for p, ports in (("tcp", tcp), ("udp", udp)) if ports],
        "client": {p: ["any"] for p, ports in (("tcp", tcp), ("udp", udp)) if ports},
        "server": {p: ports for p, ports in (("tcp", tcp), ("udp", udp)) if ports},
    }
    if urls:
        rule["names"] = [u.strip().lower() for u in urls]
    if ips:
        rule["addresses"] = [i.strip() for i in ips]
    return _ORDER[category], raw_id, rule


def _describe(entry: Mapping[str, Any], raw_id: int, area: str, category: str) -> str:
    parts = [f"endpoint set {raw_id}", str(entry.get("serviceAreaDisplayName") or area),
             category.capitalize()]
    if entry.get("required") is True:
        parts.append("required")
    if entry.get("expressRoute") is True:
        parts.append("ExpressRoute")
    notes = entry.get("notes")
    if isinstance(notes, str) and notes.strip():
        parts.append(notes.strip()[:200])
    return "; ".join(parts)


def _text(value: Any, path: str, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise RulesError(path, f"{where}: '{key}' must be a string")
    return value


def _list(value: Any, path: str, where: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RulesError(path, f"{where}: '{key}' must be a list of strings")
    return [v for v in value if v.strip()]


def _ports(value: Any, path: str, where: str, key: str) -> list[int | str]:
    """``"443, 80"`` or ``"3478-3481"`` as rule ports (sorted, duplicates dropped)."""
    if value is None:
        return []
    if not isinstance(value, str):
        raise RulesError(path, f"{where}: '{key}' must be a string such as \"80,443\"")
    out: list[tuple[int, int]] = []
    for piece in value.split(","):
        piece = piece.strip()
        if not piece:
            continue
        match = _RANGE.fullmatch(piece)
        a = int(match.group(1)) if match else -1
        b = int(match.group(2) or a) if match else -1
        if not (0 <= a <= b <= 65535):
            raise RulesError(path, f"{where}: bad port {piece[:40]!a} in '{key}'")
        out.append((a, b))
    return [a if a == b else f"{a}-{b}" for a, b in sorted(set(out))]
