"""Hypothesis strategies shared by the tests."""

from __future__ import annotations

from hypothesis import strategies as st

from classifier.rules import Rule, RuleSet

ports = st.integers(0, 65535)


@st.composite
def port_ranges(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    """A few port ranges, biased towards the edges and the Office 365 ports."""
    edge = st.sampled_from([0, 1023, 1024, 443, 3478, 50000, 50019, 50020, 59999, 65535])
    items = []
    for _ in range(draw(st.integers(0, 3))):
        a = draw(st.one_of(edge, ports))
        b = draw(st.one_of(edge, ports, st.just(a)))
        items.append((min(a, b), max(a, b)))
    return tuple(items)


@st.composite
def rule_sets(draw: st.DrawFn, max_rules: int = 12) -> RuleSet:
    """Random rule sets; some rules share a category."""
    n = draw(st.integers(0, max_rules))
    rules = []
    for i in range(n):
        protos = draw(st.sampled_from([("tcp",), ("udp",), ("tcp", "udp"), ("udp", "tcp")]))
        category = draw(st.sampled_from([f"c{i}", "shared-a", "shared-b"]))
        rules.append(Rule(
            name=f"r{i}", category=category, description="",
            protocols=protos,
            client={p: draw(port_ranges()) for p in protos},
            server={p: draw(port_ranges()) for p in protos},
        ))
    return RuleSet("random", "", tuple(rules))


@st.composite
def many_rule_sets(draw: st.DrawFn) -> RuleSet:
    """Rule sets past 64 rules, which need more than one bitmask word."""
    n = draw(st.integers(60, 140))
    rules = []
    for i in range(n):
        lo = draw(st.integers(0, 65535))
        hi = draw(st.integers(lo, min(65535, lo + 3000)))
        s = draw(ports)
        rules.append(Rule(f"r{i}", f"c{i % 70}", "", ("udp",), {"udp": ((lo, hi),)},
                          {"udp": ((s, s),)}))
    return RuleSet("many", "", tuple(rules))


@st.composite
def records(draw: st.DrawFn) -> list[tuple[int, bytes, int]]:
    """Capture records: (timestamp in ns, captured bytes, original length)."""
    out = []
    ts = draw(st.integers(0, 2**31)) * 1_000_000_000
    for _ in range(draw(st.integers(0, 40))):
        ts += draw(st.integers(0, 5_000_000_000))
        ts = min(ts, (2**32 - 1) * 1_000_000_000)
        data = draw(st.binary(max_size=600))
        orig = len(data) + draw(st.sampled_from([0, 0, 0, 1, 1000]))
        out.append((ts, data, orig))
    return out
