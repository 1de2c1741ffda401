"""Hostile inputs: rule files built to break the loader, and captures built to exhaust
time or memory.

A rule file is either loaded (and then classifies like the plain-Python reference
``RuleSet.classify_one``) or refused with one :class:`RulesError` line naming the
file; nothing else escapes. A capture of millions of minimum-size packets, of records
declaring huge lengths, or of frames under 100-deep VLAN or MPLS stacks is analysed to
the end, every packet counted, within a bounded resident set (measured in a child
process, one process: ``-j 1``; ``fuzz/bounds.py`` runs the heavier cases).
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path
from typing import Any

import pytest

import classifier
from classifier.errors import RulesError
from classifier.lookup import compile_rules
from classifier.rules import RuleSet, load_rules
from fuzz.bounds import (
    Measure,
    measure,
    write_deep_stacks,
    write_huge_length_blocks,
    write_huge_length_records,
    write_min_packets,
)
from fuzz.checks import check_capture, check_ruleset, probe_headers

ROOT = Path(__file__).resolve().parent.parent
MIX = ROOT / "pcaps" / "office365-mix.pcap"
#: Peak resident set allowed to the analysis of any hostile capture here.
PEAK_MB = 250


def write(tmp_path: Path, text: str | bytes, name: str = "rules.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def refused(path: Path) -> RulesError:
    """The one error loading ``path`` gives: a RulesError, on one line, naming it."""
    with pytest.raises(RulesError) as info:
        load_rules(path)
    text = str(info.value)
    assert "\n" not in text and "\r" not in text
    assert text.startswith(str(path))
    return info.value


RULE = """
[[rule]]
name = "r"
protocols = ["tcp"]
client.tcp = ["ephemeral"]
server.tcp = [443]
"""


# ---- rule files ----------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    'name = 1',
    'description = ["a"]',
    'source = { a = 1 }',
    'rule = "x"',
    'rule = {}',
    'rule = [1, 2]',
    'rule = [[]]',
    'rules = []',
    'name = 1979-05-27T07:32:00Z',
    '[[rule]]\nname = 1\nprotocols = ["tcp"]',
    '[[rule]]\nname = ""\nprotocols = ["tcp"]',
    '[[rule]]\nname = "r"\ncategory = 3\nprotocols = ["tcp"]',
    '[[rule]]\nname = "r"\ncategory = "other"\nprotocols = ["tcp"]\n'
    'client.tcp = []\nserver.tcp = []',
    '[[rule]]\nname = "r"\nprotocols = "tcp"',
    '[[rule]]\nname = "r"\nprotocols = []',
    '[[rule]]\nname = "r"\nprotocols = [6]',
    '[[rule]]\nname = "r"\nprotocols = ["tcp", "TCP"]',
    '[[rule]]\nname = "r"\nprotocols = ["sctp"]',
    '[[rule]]\nname = "r"\nprotocols = ["tcp"]\nclient = 5',
    '[[rule]]\nname = "r"\nprotocols = ["tcp"]\nclient.tcp = "443"\nserver.tcp = []',
    '[[rule]]\nname = "r"\nprotocols = ["tcp"]\nclient.tcp = [true]\nserver.tcp = []',
    '[[rule]]\nname = "r"\nprotocols = ["tcp"]\nclient.tcp = [1.5]\nserver.tcp = []',
    '[[rule]]\nname = "r"\nprotocols = ["tcp"]\nclient.tcp = [{}]\nserver.tcp = []',
    '[[rule]]\nname = "r"\nprotocols = ["tcp"]\nclient.tcp = [[443]]\nserver.tcp = []',
    '[[rule]]\nname = "r"\nprotocols = ["tcp"]\nclient.tcp = [443]',
    '[[rule]]\nname = "r"\nprotocols = ["tcp"]\nclient.udp = []\nclient.tcp = []\n'
    'server.tcp = []',
    '[[rule]]\nname = "r"\nprotocols = ["tcp"]\nclient.tcp = []\nserver.tcp = []\nport = 1',
    RULE + RULE,  # a duplicate name
    "[[rule]]\n" + "name = 'a'\n" * 2,  # not TOML: a key twice
    "\0",
    "name = \"a\"\nname = \"b\"",
])
def test_wrong_types_are_one_rules_error(text: str, tmp_path: Path) -> None:
    refused(write(tmp_path, text))


@pytest.mark.parametrize("item", [
    "-1", "65536", str(2**63 - 1), "-9223372036854775808", '"65535-0"', '"0-65536"',
    '"0x1bb"', '"1e3"', '"+443"', '"443-"', '"-443"', '"1-2-3"', '"000443"', '"ephemeral-1"',
    '""', '" "', '"99999999999999999999-1"', "inf", "nan",
])
def test_bad_ports_are_one_rules_error(item: str, tmp_path: Path) -> None:
    text = f'[[rule]]\nname = "r"\nprotocols = ["tcp"]\nclient.tcp = [{item}]\nserver.tcp = []'
    error = refused(write(tmp_path, text))
    assert error.rule == "r"


def test_huge_port_ranges_load_and_classify(tmp_path: Path) -> None:
    ranges = ", ".join(['"0-65535"', '" 0 - 65535 "', '"any"', '"ephemeral"', "0", "65535",
                        '"00443"'] * 500)
    text = (f'[[rule]]\nname = "all"\nprotocols = ["udp", "tcp"]\nclient.udp = [{ranges}]\n'
            f'server.udp = [{ranges}]\nclient.tcp = ["1024-65535"]\nserver.tcp = [{ranges}]\n')
    rules = load_rules(write(tmp_path, text))
    assert rules.rules[0].client["udp"][-1] == (443, 443)
    check_ruleset(rules)
    doc = classifier.analyze(str(MIX), rules=rules).to_dict()
    assert sum(c["packets"] for c in doc["categories"].values()) == doc["totals"]["packets"]


def _many_rules(n: int) -> str:
    rng = random.Random(7)
    out = ['name = "many"']
    for i in range(n):
        lo = rng.randrange(0, 65536)
        hi = min(65535, lo + rng.randrange(0, 40))
        proto = ("tcp", "udp")[i % 2]
        out.append(
            f'[[rule]]\nname = "r{i}"\ncategory = "c{i % 97}"\nprotocols = ["{proto}"]\n'
            f'client.{proto} = ["{lo}-{hi}", {rng.randrange(65536)}]\n'
            f'server.{proto} = [{rng.randrange(65536)}, "{hi}-{min(65535, hi + 3)}"]\n')
    return "\n".join(out)


def test_ten_thousand_rules_load_and_classify_like_the_reference(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, _many_rules(10_000)))
    assert len(rules.rules) == 10_000 and len(rules.categories) == 97 + 2
    compiled = compile_rules(rules)
    # Packets aimed at rules spread over the whole set (first-match order matters),
    # and random ones (mostly no rule: the reference then tries all 10,000).
    rng = random.Random(11)
    packets: list[tuple[int | None, int, int]] = []
    for r in rng.sample(rules.rules, 60):
        name = r.protocols[0]
        (c_lo, c_hi), (s_lo, _) = r.client[name][0], r.server[name][0]
        a, b = rng.randint(c_lo, c_hi), s_lo
        packets.append((6 if name == "tcp" else 17, *((a, b) if rng.random() < 0.5
                                                       else (b, a))))
    packets += [(rng.choice((6, 17)), rng.randrange(65536), rng.randrange(65536))
                for _ in range(40)]
    packets += [(1, 443, 443), (None, 0, 0)]
    got = compiled.classify(probe_headers(packets))
    for (proto, a, b), cat in zip(packets, got.tolist(), strict=True):
        assert compiled.categories[cat] == rules.classify_one(proto, a, b), (proto, a, b)
    doc = classifier.analyze(str(MIX), rules=rules).to_dict()
    assert doc["totals"] == classifier.analyze(str(MIX)).to_dict()["totals"]
    assert sum(c["packets"] for c in doc["categories"].values()) == doc["totals"]["packets"]


def _nested(depth: int, open_: str, close: str, inner: str = "1") -> str:
    return open_ * depth + inner + close * depth


@pytest.mark.parametrize("text", [
    "a = " + _nested(100_000, "[", "]"),
    "a = " + _nested(20_000, "{b = ", "}"),
    "description = " + _nested(5_000, "[", "]", '"x"'),
    '[[rule]]\nname = "r"\nprotocols = ["tcp"]\nserver.tcp = []\nclient.tcp = '
    + _nested(300, "[", "]", "443"),
    "a" + ".a" * 20_000 + " = 1",
    "[" + ".".join(["t"] * 20_000) + "]",
], ids=["arrays", "inline-tables", "description", "ports", "dotted-key", "table-header"])
def test_deep_nesting_is_one_rules_error(text: str, tmp_path: Path) -> None:
    refused(write(tmp_path, text))


@pytest.mark.parametrize("data", [
    b'name = "\xff\xfe"',
    b'description = "\xed\xa0\x80"',  # a UTF-16 surrogate, not UTF-8
    b"\xef\xbb\xbfname = \"bom\"",
    b"\x00" * 100,
    b"\x1f\x8b\x08\x00" + bytes(50),  # gzip, not TOML
])
def test_not_utf8_or_not_toml_is_one_rules_error(data: bytes, tmp_path: Path) -> None:
    refused(write(tmp_path, data))


def test_enormous_strings(tmp_path: Path) -> None:
    big = "x" * 5_000_000
    rules = load_rules(write(tmp_path, f'description = "{big}"\n{RULE}'))
    assert rules.description == big
    refused(write(tmp_path, f'[[rule]]\nname = "{big}"\nprotocols = ["tcp"]'))
    refused(write(tmp_path, f'[[rule]]\nname = "r"\nprotocols = ["tcp"]\n'
                            f'client.tcp = ["{big}"]\nserver.tcp = []'))


def test_enormous_values_give_a_short_error_line(tmp_path: Path) -> None:
    big = "x" * 5_000_000
    error = refused(write(tmp_path, f'[[rule]]\nname = "{big}"\nprotocols = ["tcp"]'))
    assert len(str(error)) < 1000


@pytest.mark.parametrize("name", ["a\\nb", "a\\rb", "a\\u001b[2Jb"])
def test_control_characters_in_a_rule_name_stay_on_one_line(name: str,
                                                             tmp_path: Path) -> None:
    path = write(tmp_path, f'[[rule]]\nname = "{name}"\nprotocols = []')
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert str(info.value).isprintable()


@pytest.mark.parametrize("item", ['"²"', '"443-4⁴³"', '"①"'])
def test_unicode_digits_in_ports_are_one_rules_error(item: str, tmp_path: Path) -> None:
    text = f'[[rule]]\nname = "r"\nprotocols = ["tcp"]\nclient.tcp = [{item}]\nserver.tcp = []'
    refused(write(tmp_path, text))


def test_empty_rule_file_counts_everything_as_other_or_non_ip(tmp_path: Path) -> None:
    for text in ("", "\n\n# nothing\n", 'name = "none"\nrule = []'):
        rules = load_rules(write(tmp_path, text, "empty.toml"))
        assert rules.rules == () and rules.categories == ("other", "non-ip")
        check_ruleset(rules)
        doc = classifier.analyze(str(MIX), rules=rules).to_dict()
        assert doc["totals"]["packets"] == 345
        assert list(doc["categories"]) == ["other", "non-ip"]
        assert sum(c["packets"] for c in doc["categories"].values()) == 345


def test_unreadable_rule_paths_are_one_rules_error(tmp_path: Path) -> None:
    refused(tmp_path)  # a directory
    refused(tmp_path / "missing.toml")


# ---- captures: resource bounds -------------------------------------------------------


def bounded(m: Measure) -> dict[str, Any]:
    assert "Traceback" not in m.stderr, m.stderr
    assert m.peak_mb < PEAK_MB, f"peak resident set {m.peak_mb:.0f} MB"
    doc = m.doc()
    cats = doc["categories"]
    assert isinstance(cats, dict)
    totals = doc["totals"]
    assert isinstance(totals, dict)
    assert sum(c["packets"] for c in cats.values()) == totals["packets"]
    assert sum(c["bytes"] for c in cats.values()) == totals["bytes"]
    return doc


def test_a_million_minimum_size_packets(tmp_path: Path) -> None:
    path = tmp_path / "min.pcap"
    write_min_packets(path, 1_000_000)
    m = measure(["-j", "1", str(path)], timeout=120)
    doc = bounded(m)
    assert m.returncode == 0, m.stderr
    assert doc["totals"] == {"packets": 1_000_000, "bytes": 60_000_000}
    assert doc["categories"]["https"]["packets"] == 1_000_000


def test_a_million_minimum_size_packets_split_over_two_processes(tmp_path: Path) -> None:
    """The capture is over 32 MiB: two processes read a byte range each, and the
    parent merges their parts (every process stays bounded)."""
    path = tmp_path / "min.pcap"
    write_min_packets(path, 1_000_000)
    m = measure(["-j", "2", str(path)], timeout=120)
    assert m.returncode == 0, m.stderr
    assert m.doc()["totals"] == {"packets": 1_000_000, "bytes": 60_000_000}
    bounded(m)


def test_packets_seconds_apart(tmp_path: Path) -> None:
    path = tmp_path / "sparse.pcap"
    write_min_packets(path, 100_000, step_us=1_000_000)
    m = measure(["-j", "1", str(path)], timeout=120)
    assert m.returncode == 0, m.stderr
    assert m.doc()["totals"]["packets"] == 100_000
    bounded(m)


def test_records_declaring_huge_lengths(tmp_path: Path) -> None:
    n, big = 200_000, 100
    path = tmp_path / "huge.pcap"
    size = write_huge_length_records(path, n, big=big)
    m = measure(["-j", "1", str(path)], timeout=120)
    doc = bounded(m)
    assert m.returncode == 1  # the last record header claims 4 GiB: corrupt
    last = size - 80
    assert f"at byte {last}:" in m.stderr
    assert doc["totals"] == {"packets": n + big, "bytes": n * 0xFFFFFFFF + big * 262144}
    captures = doc["captures"]
    assert isinstance(captures, list) and captures[0]["complete"] is False


def test_pcapng_blocks_declaring_huge_lengths(tmp_path: Path) -> None:
    n = 200_000
    path = tmp_path / "huge.pcapng"
    size = write_huge_length_blocks(path, n)
    m = measure(["-j", "1", str(path)], timeout=120)
    doc = bounded(m)
    assert m.returncode == 0
    assert f"at byte {size - 32};" in m.stderr  # the block that claims 4 GiB
    assert doc["totals"] == {"packets": n, "bytes": 60 * n}
    # A packet block claiming 4 GiB in the middle is corrupt: the packets before it stand.
    data = bytearray(path.read_bytes()[: 48 + 92 * 1000])
    data[48 + 92 * 500 + 4 : 48 + 92 * 500 + 8] = (0xFFFFFFFC).to_bytes(4, "little")
    small = tmp_path / "damaged.pcapng"
    small.write_bytes(bytes(data))
    result = check_capture(str(small), compile_rules(load_rules()))
    assert result.captures[0].packets == 500 and result.captures[0].status == "corrupt"
    assert f"at byte {48 + 92 * 500}:" in (result.captures[0].error or "")


def test_a_block_cut_off_in_a_stream_is_not_complete(tmp_path: Path) -> None:
    path = tmp_path / "huge.pcapng"
    write_huge_length_blocks(path, 10)
    gz = tmp_path / "huge.pcapng.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    direct = classifier.analyze(str(path)).to_dict()["captures"][0]
    assert direct["complete"] is False
    compressed = classifier.analyze(str(gz)).to_dict()["captures"][0]
    assert compressed["packets"] == 10
    assert compressed["complete"] is False


@pytest.mark.parametrize("kind", ["vlan", "mpls"])
def test_hundred_deep_stacks(kind: str, tmp_path: Path) -> None:
    n = 100_000
    path = tmp_path / f"{kind}.pcap"
    write_deep_stacks(path, kind, 100, n)
    m = measure(["-j", "1", str(path)], timeout=120)
    doc = bounded(m)
    assert m.returncode == 0, m.stderr
    totals = doc["totals"]
    assert isinstance(totals, dict) and totals["packets"] == n
    assert doc["categories"]["https"]["packets"] == n  # the stack is walked to the bottom
    assert doc["anomalies"] == {}


def test_deep_stacks_through_the_interpreted_decoder(tmp_path: Path) -> None:
    """A small capture runs the interpreted kernels: the same answers."""
    rules = compile_rules(load_rules())
    for kind in ("vlan", "mpls"):
        for depth in (1, 2, 100, 700):
            path = tmp_path / f"{kind}{depth}.pcap"
            write_deep_stacks(path, kind, depth, 3)
            for compiled in (False, True):
                result = check_capture(str(path), rules, compiled=compiled)
                assert result.categories["https"].packets == 3, (kind, depth, compiled)


def test_reference_and_lookup_agree_on_the_default_rules() -> None:
    check_ruleset(RuleSet("default", "", load_rules().rules), limit=200)
