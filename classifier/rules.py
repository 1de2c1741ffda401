"""Rule sets: Office 365 flow categories stated as data (TOML files in ``rules/``).

A rule set file::

    name = "office365-2015"
    description = "..."
    source = "..."            # optional: where the table comes from

    [[rule]]
    name = "audio"            # unique
    category = "audio"        # optional, defaults to the name
    description = "Lync audio"
    protocols = ["tcp", "udp"]
    client.tcp = ["50000-50019"]
    server.tcp = [443, "50000-59999"]
    ...

Ports are integers, ``"a-b"`` ranges, ``"ephemeral"`` (1024-65535) or ``"any"``
(0-65535).

A rule may also name its servers::

    addresses = ["52.112.0.0/14", "2603:1063::/38"]   # server address prefixes
    names = ["*.lync.com", "teams.microsoft.com"]       # server name patterns

    signatures = ["ms-stun"]                            # what the flow begins with

With any of them, the rule matches only when, besides the ports, the address of the
end that matched the server ports lies in one of the prefixes, or the flow's server
name (TLS SNI, HTTP Host, or a DNS answer seen earlier) matches one of the patterns,
or the flow's first payload has one of the signatures: one suffices, as in
Microsoft's endpoint sets. The signatures (:data:`SIGNATURES`): ``ms-stun``, a STUN
message carrying an attribute of Microsoft's ICE/TURN extensions, which Skype for
Business, Skype and Teams media flows begin with (UDP, and TCP with RFC 4571 framing).
A pattern is a name, or a name with ``*`` standing for any characters (``*.lync.com``
matches ``a.b.lync.com``, not ``lync.com``); names compare case-insensitively.

Every protocol listed in ``protocols`` needs a client and a server list
(an empty list never matches). A packet matches a rule when, on one of its protocols,
one endpoint's port is in the client list and the other's in the server list, either
direction. The first matching rule in file order wins; IP packets that match none are
``other``; frames without an IP layer are ``non-ip``.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RulesError
from .prefixes import parse_prefix

__all__ = [
    "NON_IP",
    "OTHER",
    "PROTOCOLS",
    "SIGNATURES",
    "Rule",
    "RuleSet",
    "default_rules_path",
    "load_rules",
    "parse_rules",
]

OTHER = "other"
NON_IP = "non-ip"
#: IP protocol numbers of the protocols a rule may name.
PROTOCOLS: Mapping[str, int] = {"tcp": 6, "udp": 17}
PORT_ALIASES: Mapping[str, tuple[int, int]] = {"ephemeral": (1024, 65535), "any": (0, 65535)}
#: The payload signatures a rule may ask for, and what each means.
SIGNATURES: Mapping[str, str] = {
    "ms-stun": "a STUN message with an attribute of Microsoft's ICE/TURN extensions "
               "(MS-ICE2, MS-TURN, MS-TURNBWM) first in the flow",
}

_SET_KEYS = {"name", "description", "source", "rule"}
_RULE_KEYS = {"name", "category", "description", "protocols", "client", "server",
              "addresses", "names", "signatures"}
_MAX_RULES = 100_000
_MAX_NAME = 200
#: A server name pattern: DNS name characters and ``*``, at most 253 of them.
_PATTERN = re.compile(r"[a-z0-9*_-]+(?:\.[a-z0-9*_-]+)*\.?")
_MAX_PATTERN = 253

PortRanges = tuple[tuple[int, int], ...]
#: A port or a range: ASCII digits only (str.isdigit also takes superscripts).
_RANGE = re.compile(r"([0-9]{1,5})\s*(?:-\s*([0-9]{1,5}))?")


@dataclass(frozen=True)
class Rule:
    """One row of a rule set: which client and server ports make a category."""

    name: str
    category: str
    description: str
    protocols: tuple[str, ...]
    client: Mapping[str, PortRanges]
    server: Mapping[str, PortRanges]
    #: Server address prefixes, as (first, last) 128-bit addresses (IPv4 mapped).
    addresses: tuple[tuple[int, int], ...] = ()
    #: The prefixes as written, for display.
    address_texts: tuple[str, ...] = ()
    #: Server name patterns, lower case.
    names: tuple[str, ...] = ()
    #: Payload signatures (:data:`SIGNATURES`) the flow may begin with.
    signatures: tuple[str, ...] = ()

    @property
    def conditional(self) -> bool:
        """Whether the rule needs a server address, name or signature besides its ports."""
        return bool(self.addresses or self.names or self.signatures)

    @property
    def learns(self) -> bool:
        """Whether the rule needs what is learned from a flow: a name or a signature."""
        return bool(self.names or self.signatures)

    def matches(self, protocol: int, port_a: int, port_b: int, addr_a: int | None = None,
                addr_b: int | None = None, name: str | None = None,
                signature: str | None = None) -> bool:
        """Plain-Python evaluation, the reference the compiled lookup is tested against.

        ``addr_a``, ``addr_b``: the endpoints' 128-bit addresses (IPv4 mapped);
        ``name``: the flow's server name, if known; ``signature``: the flow's, if any.
        """
        for proto in self.protocols:
            if PROTOCOLS[proto] != protocol:
                continue
            client, server = self.client[proto], self.server[proto]
            if _in(port_a, client) and _in(port_b, server) and \
                    self.names_server(addr_b, name, signature):
                return True
            if _in(port_b, client) and _in(port_a, server) and \
                    self.names_server(addr_a, name, signature):
                return True
        return False

    def names_server(self, address: int | None, name: str | None,
                     signature: str | None = None) -> bool:
        """Whether the server end (its address, the flow's name and signature) meets
        the rule's address, name and signature conditions (always, for a rule without
        any)."""
        if not self.conditional:
            return True
        if address is not None and any(lo <= address <= hi for lo, hi in self.addresses):
            return True
        if signature is not None and signature in self.signatures:
            return True
        return name is not None and any(match_name(p, name) for p in self.names)


def match_name(pattern: str, name: str) -> bool:
    """Whether server ``name`` matches ``pattern`` (``*``: any characters)."""
    return fnmatch.fnmatchcase(name.lower().rstrip("."), pattern)


def _in(port: int, ranges: PortRanges) -> bool:
    return any(lo <= port <= hi for lo, hi in ranges)


@dataclass(frozen=True)
class RuleSet:
    """An ordered list of rules; ``categories`` lists the rules' categories in order,
    then ``other`` and ``non-ip``."""

    name: str
    description: str
    rules: tuple[Rule, ...]
    source: str = ""
    path: str | None = None
    categories: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        seen: dict[str, None] = {}
        for rule in self.rules:
            seen.setdefault(rule.category, None)
        object.__setattr__(self, "categories", (*seen, OTHER, NON_IP))

    @property
    def uses_addresses(self) -> bool:
        return any(r.addresses for r in self.rules)

    @property
    def uses_names(self) -> bool:
        """Whether a rule needs what flows tell: a server name or a signature."""
        return any(r.learns for r in self.rules)

    def classify_one(self, protocol: int | None, port_a: int | None, port_b: int | None,
                     addr_a: int | None = None, addr_b: int | None = None,
                     name: str | None = None, signature: str | None = None) -> str:
        """Category of one packet, in plain Python (``protocol`` None: no IP layer;
        ports None: not captured)."""
        if protocol is None:
            return NON_IP
        if port_a is None or port_b is None:
            return OTHER
        for rule in self.rules:
            if rule.matches(protocol, port_a, port_b, addr_a, addr_b, name, signature):
                return rule.category
        return OTHER


def default_rules_path() -> Path:
    """The shipped default rule set, ``office365-2015.toml``."""
    return rules_dir() / "office365-2015.toml"


def rules_dir() -> Path:
    """Where the shipped rule sets live: inside the installed package, else the repo."""
    here = Path(__file__).resolve().parent
    packaged = here / "_rules"
    return packaged if packaged.is_dir() else here.parent / "rules"


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Load and validate a rule set file (TOML); ``None`` loads the default.

    A bare name such as ``teams`` finds the shipped ``rules/teams.toml``; a ``.json``
    file is read as Microsoft's endpoint list (see :mod:`classifier.endpoints`).
    Raises :class:`RulesError` naming the file, the rule and the problem.
    """
    if path is None:
        path = default_rules_path()
    p = Path(path)
    if not p.exists() and p.parent == Path(".") and (rules_dir() / f"{p.name}.toml").exists():
        p = rules_dir() / f"{p.name}.toml"
    name = str(path)
    if p.suffix.lower() == ".json":  # a downloaded Microsoft endpoint list
        from .endpoints import load_endpoints

        return load_endpoints(p)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise RulesError(name, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RulesError(name, f"not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(name, f"not valid TOML: {exc}") from None
    except RecursionError:
        raise RulesError(name, "not valid TOML: nested too deeply") from None
    return parse_rules(data, path=name)


def parse_rules(data: Mapping[str, Any], *, path: str = "<rules>") -> RuleSet:
    """Validate a rule set already parsed into Python values."""
    unknown = set(data) - _SET_KEYS
    if unknown:
        raise RulesError(path, f"unknown key {_first(unknown)!r} (allowed: {_keys(_SET_KEYS)})")
    set_name = _string(data.get("name", Path(path).stem), path, None, "name")
    description = _string(data.get("description", ""), path, None, "description")
    source = _string(data.get("source", ""), path, None, "source")
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise RulesError(path, "'rule' must be an array of tables ([[rule]])")
    if len(raw_rules) > _MAX_RULES:
        raise RulesError(path, f"{len(raw_rules)} rules, more than the {_MAX_RULES} allowed")
    rules: list[Rule] = []
    names: set[str] = set()
    for index, raw in enumerate(raw_rules, 1):
        rule = _parse_rule(raw, index, path)
        if rule.name in names:
            raise RulesError(path, "duplicate rule name", rule.name)
        if rule.category in (OTHER, NON_IP):
            raise RulesError(path, f"category {rule.category!r} is reserved", rule.name)
        names.add(rule.name)
        rules.append(rule)
    return RuleSet(set_name, description, tuple(rules), source=source, path=path)


def _parse_rule(raw: Any, index: int, path: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise RulesError(path, f"rule #{index} is not a table")
    label: str = raw["name"] if isinstance(raw.get("name"), str) else f"#{index}"
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise RulesError(
            path, f"unknown key {_first(unknown)!r} (allowed: {_keys(_RULE_KEYS)})", label
        )
    if "name" not in raw:
        raise RulesError(path, "missing 'name'", label)
    name = _string(raw["name"], path, label, "name")
    if not name or len(name) > _MAX_NAME:
        raise RulesError(path, f"'name' must be 1 to {_MAX_NAME} characters", label)
    category = _string(raw.get("category", name), path, label, "category")
    if not category or len(category) > _MAX_NAME:
        raise RulesError(path, f"'category' must be 1 to {_MAX_NAME} characters", label)
    description = _string(raw.get("description", ""), path, label, "description")
    protocols = raw.get("protocols")
    if not isinstance(protocols, list) or not protocols:
        raise RulesError(path, "'protocols' must be a non-empty list such as [\"tcp\"]", label)
    protos: list[str] = []
    for proto in protocols:
        if not isinstance(proto, str) or proto.lower() not in PROTOCOLS:
            raise RulesError(path, f"unknown protocol {proto!r} (allowed: tcp, udp)", label)
        if proto.lower() in protos:
            raise RulesError(path, f"protocol {proto!r} listed twice", label)
        protos.append(proto.lower())
    sides: dict[str, dict[str, PortRanges]] = {}
    for side in ("client", "server"):
        table = raw.get(side, {})
        if not isinstance(table, Mapping):
            raise RulesError(path, f"'{side}' must be a table of protocol = [ports]", label)
        for proto in table:
            if proto not in protos:
                raise RulesError(
                    path, f"'{side}.{proto}' names a protocol not in 'protocols'", label
                )
        parsed: dict[str, PortRanges] = {}
        for proto in protos:
            if proto not in table:
                raise RulesError(path, f"missing '{side}.{proto}' (use [] for none)", label)
            parsed[proto] = _ports(table[proto], path, label, f"{side}.{proto}")
        sides[side] = parsed
    addresses = raw.get("addresses", [])
    if not isinstance(addresses, list):
        raise RulesError(path, "'addresses' must be a list of prefixes such as \"10.0.0.0/8\"",
                         label)
    ranges: list[tuple[int, int]] = []
    for item in addresses:
        try:
            if not isinstance(item, str) or not item.isascii():
                raise ValueError
            ranges.append(parse_prefix(item))
        except ValueError:
            raise RulesError(path, f"bad address prefix {_shown(item)} in 'addresses' (an IPv4 "
                                   "or IPv6 prefix such as 52.112.0.0/14, host bits zero)",
                             label) from None
    patterns = raw.get("names", [])
    if not isinstance(patterns, list):
        raise RulesError(path, "'names' must be a list of server names such as \"*.lync.com\"",
                         label)
    names: list[str] = []
    for item in patterns:
        text = item.strip().lower().rstrip(".") if isinstance(item, str) else None
        if text is None or len(text) > _MAX_PATTERN or not _PATTERN.fullmatch(text):
            raise RulesError(path, f"bad server name {_shown(item)} in 'names' (letters, digits, "
                                   "'-', '_', '.' and '*', at most 253)", label)
        names.append(text)
    signatures = raw.get("signatures", [])
    if not isinstance(signatures, list) or not all(
            isinstance(x, str) and x in SIGNATURES for x in signatures):
        bad = signatures if not isinstance(signatures, list) else next(
            x for x in signatures if not isinstance(x, str) or x not in SIGNATURES)
        raise RulesError(path, f"bad signature {_shown(bad)} in 'signatures' (a list of: "
                               f"{', '.join(SIGNATURES)})", label)
    return Rule(name, category, description, tuple(protos), sides["client"], sides["server"],
                addresses=tuple(ranges),
                address_texts=tuple(str(a).strip() for a in addresses),
                names=tuple(dict.fromkeys(names)),
                signatures=tuple(dict.fromkeys(signatures)))


def _shown(value: Any) -> str:
    """A value from a rule file, bounded and escaped for an error line."""
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _ports(value: Any, path: str, rule: str, where: str) -> PortRanges:
    if not isinstance(value, list):
        raise RulesError(path, f"'{where}' must be a list of ports and ranges", rule)
    out: list[tuple[int, int]] = []
    for item in value:
        out.append(_port_range(item, path, rule, where))
    return tuple(out)


def _port_range(item: Any, path: str, rule: str, where: str) -> tuple[int, int]:
    bad = f"bad port range {item!r} in '{where}' (ports are 0-65535, ranges 'a-b' with a <= b)"
    if isinstance(item, bool):
        raise RulesError(path, bad, rule)
    if isinstance(item, int):
        lo = hi = item
    elif isinstance(item, str):
        text = item.strip().lower()
        if text in PORT_ALIASES:
            return PORT_ALIASES[text]
        match = _RANGE.fullmatch(text)
        if match is None:
            raise RulesError(path, bad, rule)
        lo = int(match.group(1))
        hi = int(match.group(2) or match.group(1))
    else:
        raise RulesError(path, bad, rule)
    if not (0 <= lo <= hi <= 65535):
        raise RulesError(path, bad, rule)
    return (lo, hi)


def _string(value: Any, path: str, rule: str | None, key: str) -> str:
    if not isinstance(value, str):
        raise RulesError(path, f"'{key}' must be a string", rule)
    return value


def _first(keys: set[str]) -> str:
    return sorted(map(str, keys))[0]


def _keys(keys: set[str]) -> str:
    return ", ".join(sorted(keys))
