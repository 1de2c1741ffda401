"""Address prefixes: the interval lookup equals ipaddress membership; rules that
combine ports, prefixes and names equal their plain-Python evaluation."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.decode import FLAG_PORTS, Headers
from classifier.lookup import compile_rules
from classifier.prefixes import PrefixTable, parse_prefix, split_address
from classifier.rules import RulesError, parse_rules

V4 = 0xFFFF << 32


def _v4(draw: st.DrawFn) -> str:
    bits = draw(st.integers(0, 32))
    addr = draw(st.integers(0, (1 << 32) - 1)) >> (32 - bits) << (32 - bits) if bits else 0
    return f"{ipaddress.IPv4Address(addr)}/{bits}"


def _v6(draw: st.DrawFn) -> str:
    bits = draw(st.integers(0, 128))
    addr = draw(st.integers(0, (1 << 128) - 1)) >> (128 - bits) << (128 - bits) if bits else 0
    return f"{ipaddress.IPv6Address(addr)}/{bits}"


@st.composite
def prefix(draw: st.DrawFn) -> str:
    return _v4(draw) if draw(st.booleans()) else _v6(draw)


@st.composite
def address_near(draw: st.DrawFn, prefixes: list[str]) -> int:
    """An address, often at or next to a prefix boundary (where off-by-ones live)."""
    if prefixes and draw(st.integers(0, 3)):
        first, last = parse_prefix(draw(st.sampled_from(prefixes)))
        edge = draw(st.sampled_from([first, last]))
        value: int = (edge + draw(st.integers(-1, 1))) % (1 << 128)
        return value
    if draw(st.integers(0, 2)) == 0:  # the first or last address of a search block
        top = draw(st.integers(0, 0xFFFF))
        last = draw(st.booleans())
        if draw(st.booleans()):
            return V4 | top << 16 | (0xFFFF if last else 0)
        return top << 112 | (((1 << 112) - 1) if last else 0)
    if draw(st.booleans()):
        return V4 | draw(st.integers(0, (1 << 32) - 1))
    return draw(st.integers(0, (1 << 128) - 1))


def _member(address: int, text: str) -> bool:
    net = ipaddress.ip_network(text)
    if net.version == 4:
        return address >> 32 == 0xFFFF and ipaddress.IPv4Address(address & 0xFFFFFFFF) in net
    return ipaddress.IPv6Address(address) in net


@settings(max_examples=300, deadline=None)
@given(st.data(), st.integers(1, 70))
def test_prefix_lookup_equals_ipaddress(data: st.DataObject, n_rules: int) -> None:
    rules = [data.draw(st.lists(prefix(), max_size=5)) for _ in range(n_rules)]
    flat = [p for r in rules for p in r]
    table = PrefixTable([[parse_prefix(p) for p in r] for r in rules])
    addresses = data.draw(st.lists(address_near(flat), min_size=1, max_size=40))
    hi = np.array([split_address(a)[0] for a in addresses], np.uint64)
    lo = np.array([split_address(a)[1] for a in addresses], np.uint64)
    for compiled in (True, False):
        bits = table.class_bits[table.classes(hi, lo, compiled=compiled)]
        for i, a in enumerate(addresses):
            for r, prefixes in enumerate(rules):
                inside = bool(int(bits[i, r // 64]) >> (r % 64) & 1)
                assert inside == any(_member(a, p) for p in prefixes), (hex(a), r, prefixes)


def test_many_prefixes_few_classes() -> None:
    """Ten thousand prefixes of one rule: one class besides 'in none'."""
    prefixes = [parse_prefix(f"10.{i // 256}.{i % 256}.0/24") for i in range(0, 20000, 2)]
    table = PrefixTable([prefixes])
    assert table.class_bits.shape[0] == 2
    hi = np.zeros(3, np.uint64)
    lo = np.array([V4 | 0x0A000001, V4 | 0x0A000101, V4 | 0x0B000000], np.uint64)
    assert table.classes(hi, lo).tolist() == [1, 0, 0]


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "300.0.0.0/8", "fe80::/129", "", "x", 5,
                                 "\u0661\u0660.0.0.0/8"])
def test_bad_prefix_is_one_line(bad: object) -> None:
    rules = {"rule": [{"name": "r", "protocols": ["tcp"], "client": {"tcp": ["any"]},
                       "server": {"tcp": [443]}, "addresses": [bad]}]}
    with pytest.raises(RulesError) as info:
        parse_rules(rules, path="x.toml")
    assert "x.toml" in str(info.value) and "'addresses'" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", ["<b>", "a b.com", "*.x\ny", "é.com", "a" * 300, 7])
def test_bad_name_pattern_is_one_line(bad: object) -> None:
    rules = {"rule": [{"name": "r", "protocols": ["tcp"], "client": {"tcp": ["any"]},
                       "server": {"tcp": [443]}, "names": [bad]}]}
    with pytest.raises(RulesError) as info:
        parse_rules(rules, path="x.toml")
    assert "'names'" in str(info.value) and "\n" not in str(info.value)


NAMES = ["a.lync.com", "b.a.lync.com", "lync.com", "teams.microsoft.com", "x.sharepoint.com",
         "contoso-my.sharepoint.com", "example.org", None]
PATTERNS = ["*.lync.com", "teams.microsoft.com", "*.sharepoint.com", "*-my.sharepoint.com",
            "lync.com", "*"]


@st.composite
def conditional_rule(draw: st.DrawFn, index: int) -> dict[str, object]:
    protos = draw(st.sampled_from([["tcp"], ["udp"], ["tcp", "udp"]]))
    ports = st.lists(st.sampled_from(["any", "ephemeral", 443, 80, "3478-3481", "50000-50019"]),
                     max_size=2)
    rule: dict[str, object] = {
        "name": f"r{index}", "category": f"c{draw(st.integers(0, 5))}", "protocols": protos,
        "client": {p: draw(ports) for p in protos}, "server": {p: draw(ports) for p in protos},
    }
    if draw(st.booleans()):
        rule["addresses"] = draw(st.lists(prefix(), max_size=3))
    if draw(st.booleans()):
        rule["names"] = draw(st.lists(st.sampled_from(PATTERNS), max_size=2))
    return rule


@settings(max_examples=200, deadline=None)
@given(st.data(), st.integers(1, 70))
def test_conditional_lookup_equals_plain_evaluation(data: st.DataObject, n: int) -> None:
    raw = {"rule": [data.draw(conditional_rule(i)) for i in range(n)]}
    rules = parse_rules(raw)
    compiled = compile_rules(rules)
    prefixes = [p for r in raw["rule"] for p in r.get("addresses", [])]  # type: ignore[attr-defined]
    pkts = data.draw(st.lists(st.tuples(
        st.sampled_from([6, 17]), st.sampled_from([443, 80, 3479, 50005, 1000, 60000]),
        st.sampled_from([443, 80, 3479, 50005, 1000, 60000]), address_near(prefixes),
        address_near(prefixes), st.sampled_from(NAMES)), min_size=1, max_size=30))
    m = len(pkts)
    h = Headers(
        ip=np.full(m, 4, np.uint8), proto=np.array([p[0] for p in pkts], np.uint8),
        sport=np.array([p[1] for p in pkts], np.uint16),
        dport=np.array([p[2] for p in pkts], np.uint16),
        flags=np.full(m, FLAG_PORTS, np.uint8), frag_id=np.zeros(m, np.uint32),
        src_hi=np.array([p[3] >> 64 for p in pkts], np.uint64),
        src_lo=np.array([p[3] & (1 << 64) - 1 for p in pkts], np.uint64),
        dst_hi=np.array([p[4] >> 64 for p in pkts], np.uint64),
        dst_lo=np.array([p[4] & (1 << 64) - 1 for p in pkts], np.uint64),
        dscp=np.zeros(m, np.uint8), tcp_flags=np.zeros(m, np.uint8),
        l4=np.zeros(m, np.int32), anomaly=np.zeros(m, np.uint8),
        ipend=np.full(m, -1, np.int32), name=np.zeros(m, np.int32))
    names = np.stack([compiled.name_bits(p[5]) if p[5] else np.zeros(compiled.words, np.uint64)
                      for p in pkts])
    for mode in (True, False):
        cat, side = compiled.classify_with_sides(h, names=names, compiled=mode)
        assert side is not None
        for i, (proto, a, b, aa, ab, name) in enumerate(pkts):
            want = rules.classify_one(proto, a, b, aa, ab, name)
            assert rules.categories[cat[i]] == want, (pkts[i], want)
            if want != "other":  # the client end is the end the first rule takes
                rule = next(r for r in rules.rules if r.matches(proto, a, b, aa, ab, name))
                proto_name = "tcp" if proto == 6 else "udp"
                src_client = (any(lo <= a <= hi for lo, hi in rule.client[proto_name])
                              and any(lo <= b <= hi for lo, hi in rule.server[proto_name])
                              and rule.names_server(ab, name))
                assert side[i] == int(src_client)
