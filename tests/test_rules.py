"""Rule files: the default table, validation errors, and the compiled lookup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.decode import FLAG_LATER_FRAGMENT, FLAG_PORTS, Headers
from classifier.errors import RulesError
from classifier.lookup import compile_rules
from classifier.rules import RuleSet, load_rules, parse_rules
from tests.strategies import many_rule_sets, rule_sets

SEED_ORDER = ("audio", "video", "desktop-sharing", "push", "https", "http", "smtp",
              "smtp-relay", "imap", "pop3s", "other", "non-ip")


def test_default_rules_are_the_seed_table_in_order() -> None:
    rules = load_rules()
    assert rules.name == "office365-2015"
    assert rules.categories == SEED_ORDER
    audio = rules.rules[0]
    assert audio.client == {"tcp": ((50000, 50019),), "udp": ((50000, 50019),)}
    assert audio.server == {"tcp": ((443, 443), (50000, 59999)),
                            "udp": ((3478, 3478), (50000, 59999))}
    sharing = rules.rules[2]
    assert sharing.server["udp"] == ()  # the seed gives sharing no UDP server port
    assert rules.rules[8].server == {"tcp": ((143, 143), (993, 993))}
    assert all(r.client == {"tcp": ((1024, 65535),)} for r in rules.rules[3:])


@pytest.mark.parametrize(("proto", "a", "b", "expected"), [
    (17, 50001, 3478, "audio"),
    (17, 3478, 50001, "audio"),  # either direction
    (6, 50019, 443, "audio"),
    (17, 50020, 50500, "video"),
    (6, 50045, 443, "desktop-sharing"),
    (17, 50045, 3478, "other"),  # no UDP server port for sharing
    (6, 40000, 5223, "push"),
    (6, 40000, 443, "https"),
    (6, 1023, 443, "other"),  # not an ephemeral client port
    (17, 40000, 443, "other"),  # UDP 443 is not in the 2015 table
    (6, 25, 51000, "smtp"),
    (6, 2000, 993, "imap"),
    (6, 2000, 995, "pop3s"),
    (6, 50000, 50001, "audio"),  # both ends could be the client: the first rule wins
])
def test_default_rules_classify_seed_rows(proto: int, a: int, b: int, expected: str) -> None:
    assert load_rules().classify_one(proto, a, b) == expected


def _write(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "bad.toml"
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


RULE = '[[rule]]\nname = "x"\nprotocols = ["tcp"]\nclient.tcp = ["ephemeral"]\n'


@pytest.mark.parametrize(("text", "message"), [
    ('[[rule]]\nname = "x"\nprotocols = ["tcp"]\nclient.tcp = [1]\nserver.tcp = [2]\ncolour = 1\n',
     "rule 'x': unknown key 'colour'"),
    (RULE + 'server.tcp = ["70000"]\n', "rule 'x': bad port range '70000' in 'server.tcp'"),
    (RULE + 'server.tcp = ["9-3"]\n', "rule 'x': bad port range '9-3'"),
    (RULE + "server.tcp = [true]\n", "rule 'x': bad port range True"),
    (RULE + "server.tcp = [443]\n" + RULE + "server.tcp = [80]\n", "rule 'x': duplicate rule name"),
    (RULE, "rule 'x': missing 'server.tcp'"),
    ('[[rule]]\nname = "x"\nprotocols = ["icmp"]\n', "unknown protocol 'icmp'"),
    (RULE + "server.tcp = [1]\nserver.udp = [2]\n", "'server.udp' names a protocol not in"),
    ("nmae = 'typo'\n", "unknown key 'nmae'"),
    ("[[rule]\n", "not valid TOML"),
    (b"name = \"\xff\xfe\"\n", "not UTF-8"),
    ("rule = 3\n", "'rule' must be an array of tables"),
    ('[[rule]]\nname = "other"\nprotocols = ["tcp"]\nclient.tcp = [1]\nserver.tcp = [2]\n',
     "category 'other' is reserved"),
])
def test_bad_rule_files_name_the_file_the_rule_and_the_problem(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)


def test_missing_rules_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "absent.toml")


def test_category_key_groups_rules() -> None:
    rs = parse_rules({"rule": [
        {"name": "a", "category": "web", "protocols": ["tcp"], "client": {"tcp": ["any"]},
         "server": {"tcp": [443]}},
        {"name": "b", "category": "web", "protocols": ["tcp"], "client": {"tcp": ["any"]},
         "server": {"tcp": [80]}},
    ]})
    assert rs.categories == ("web", "other", "non-ip")


def _headers(proto: np.ndarray, sport: np.ndarray, dport: np.ndarray,
             ip: np.ndarray | None = None, flags: np.ndarray | None = None) -> Headers:
    n = len(proto)
    z8 = np.zeros(n, np.uint8)
    z64 = np.zeros(n, np.uint64)
    return Headers(
        ip=np.full(n, 4, np.uint8) if ip is None else ip,
        proto=proto.astype(np.uint8), sport=sport.astype(np.uint16),
        dport=dport.astype(np.uint16),
        flags=np.full(n, FLAG_PORTS, np.uint8) if flags is None else flags,
        frag_id=np.zeros(n, np.uint32), src_hi=z64, src_lo=z64, dst_hi=z64, dst_lo=z64,
        dscp=z8, tcp_flags=z8, l4=np.zeros(n, np.int32), anomaly=z8,
        ipend=np.full(n, -1, np.int32), name=np.zeros(n, np.int32),
    )


packets = st.lists(
    st.tuples(st.sampled_from([6, 17, 1, 132]), st.integers(0, 65535), st.integers(0, 65535)),
    min_size=1, max_size=60,
)


def _check_lookup(rules: RuleSet, pkts: list[tuple[int, int, int]]) -> None:
    arr = np.array(pkts, np.int64)
    cat = compile_rules(rules).classify(_headers(arr[:, 0], arr[:, 1], arr[:, 2]))
    names = [rules.categories[c] for c in cat]
    assert names == [rules.classify_one(p, a, b) for p, a, b in pkts]


@settings(max_examples=300, deadline=None)
@given(rules=rule_sets(), pkts=packets)
def test_compiled_lookup_equals_plain_evaluation(rules: RuleSet,
                                                 pkts: list[tuple[int, int, int]]) -> None:
    _check_lookup(rules, pkts)


@settings(max_examples=25, deadline=None)
@given(rules=many_rule_sets(), pkts=packets)
def test_compiled_lookup_past_64_rules_equals_plain_evaluation(
    rules: RuleSet, pkts: list[tuple[int, int, int]]
) -> None:
    _check_lookup(rules, pkts)


@settings(max_examples=200, deadline=None)
@given(rules=rule_sets(), pkts=packets,
       kinds=st.lists(st.sampled_from(["ported", "no-ports", "later-fragment", "non-ip"]),
                      min_size=60, max_size=60))
def test_compiled_pair_lookup_equals_numpy_with_client_ends(
        rules: RuleSet, pkts: list[tuple[int, int, int]], kinds: list[str]) -> None:
    """The one-pass kernel and the numpy gathers agree on categories and client ends,
    for packets with ports, without, later fragments and non-IP ones."""
    compiled = compile_rules(rules)
    assert compiled.pair_table is not None
    arr = np.array(pkts, np.int64)
    n = len(pkts)
    flag_of = {"ported": FLAG_PORTS, "no-ports": 0, "later-fragment": FLAG_LATER_FRAGMENT,
               "non-ip": 0}
    flags = np.array([flag_of[k] for k in kinds[:n]], np.uint8)
    ip = np.array([0 if k == "non-ip" else 4 for k in kinds[:n]], np.uint8)
    h = _headers(arr[:, 0], arr[:, 1], arr[:, 2], ip, flags)
    cat, side = compiled.classify_with_sides(h, compiled=True)
    want_cat, want_side = compiled.classify_with_sides(h, compiled=False)
    assert side is not None and want_side is not None
    assert cat.tolist() == want_cat.tolist()
    assert side.tolist() == want_side.tolist()
    alone, none = compiled.classify_with_sides(h, sides=False, compiled=True)
    assert none is None and alone.tolist() == want_cat.tolist()


def test_scan_path_for_many_port_classes_equals_plain_evaluation() -> None:
    # 1,500 rules of distinct single ports: too many classes for the pair table.
    rules = parse_rules({"rule": [
        {"name": f"r{i}", "protocols": ["udp"], "client": {"udp": [10000 + i]},
         "server": {"udp": [20000 + i]}} for i in range(1500)
    ]})
    compiled = compile_rules(rules)
    assert compiled.pair_table is None
    rng = np.random.default_rng(1)
    pkts = [(17, int(10000 + i), int(20000 + j)) for i, j in rng.integers(0, 1500, (400, 2))]
    pkts += [(17, 20000 + i, 10000 + i) for i in range(0, 1500, 7)]
    _check_lookup(rules, pkts)


def test_non_ip_and_unported_packets() -> None:
    compiled = compile_rules(load_rules())
    proto = np.array([17, 17, 17, 0])
    port = np.array([50001, 50001, 50001, 0])
    other = np.array([3478, 3478, 3478, 0])
    flags = np.array([FLAG_PORTS, 0, FLAG_LATER_FRAGMENT, 0], np.uint8)
    ip = np.array([4, 4, 6, 0], np.uint8)
    cat = compile_rules(load_rules()).classify(_headers(proto, port, other, ip, flags))
    assert [compiled.categories[c] for c in cat] == ["audio", "other", "other", "non-ip"]


def test_lookup_cost_does_not_grow_with_rules() -> None:
    # 10 or 60 rules: the same pair-table gather (a structural check, not a timing).
    ten = compile_rules(load_rules())
    sixty = compile_rules(parse_rules({"rule": [
        {"name": f"r{i}", "protocols": ["tcp", "udp"], "client": {"tcp": ["ephemeral"],
         "udp": [f"{50000 + i}"]}, "server": {"tcp": [1000 + i], "udp": [3478]}}
        for i in range(60)
    ]}))
    assert ten.pair_table is not None and sixty.pair_table is not None


def test_a_rule_set_is_compiled_once_per_content() -> None:
    """Equal rule sets share their tables (a process compiles a set once, whatever the
    number of captures or byte ranges); a set that differs in anything gets its own."""
    from dataclasses import replace


    one, again = load_rules(), load_rules()
    assert one is not again and compile_rules(one) is compile_rules(again)
    changed = replace(one, rules=(replace(one.rules[0], category="voice"), *one.rules[1:]))
    other = compile_rules(changed)
    assert other is not compile_rules(one)
    assert other.categories[0] == "voice" and compile_rules(one).categories[0] == "audio"
