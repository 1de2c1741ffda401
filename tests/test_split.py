"""A capture split into byte ranges gives, merged, exactly the result of one piece."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import classifier
from classifier.lookup import compile_rules
from classifier.rules import load_rules
from classifier.split import analyze_split, plan_ranges

RULES = load_rules()
COMPILED = compile_rules(RULES)


@pytest.fixture(scope="module")
def long_capture(tmp_path_factory: pytest.TempPathFactory, pcaps_dir: Path) -> Path:
    """The mix, ipv4 (fragments sent last-first, a fragment without its first) and
    ipv6 samples' records, repeated: many fragments straddle any split point."""
    header = (pcaps_dir / "office365-mix.pcap").read_bytes()[:24]
    bodies = [(pcaps_dir / n).read_bytes()[24:] for n in
              ("office365-mix.pcap", "ethernet-vlan.pcap", "ethernet-mpls.pcap")]
    path = tmp_path_factory.mktemp("split") / "long.pcap"
    path.write_bytes(header + b"".join(bodies) * 3)
    return path


def _split(path: Path, at: list[int]) -> dict[str, object]:
    ranges = plan_ranges(str(path), len(at) + 1, min_bytes=0, at=at)
    if ranges is None:  # every point fell inside the last record: one piece
        ranges = [(24, path.stat().st_size)]
    return analyze_split(str(path), RULES, COMPILED, ranges).to_dict()


def test_two_ranges_equal_one_piece(long_capture: Path) -> None:
    whole = classifier.analyze(str(long_capture)).to_dict()
    size = long_capture.stat().st_size
    assert _split(long_capture, [size // 2]) == whole
    assert _split(long_capture, [size // 3, 2 * size // 3]) == whole


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_split_points_give_the_same_result(long_capture: Path, data: st.DataObject) -> None:
    size = long_capture.stat().st_size
    at = data.draw(st.lists(st.integers(25, size - 1), min_size=1, max_size=4, unique=True))
    assert _split(long_capture, sorted(at)) == classifier.analyze(str(long_capture)).to_dict()


def test_fragments_straddling_a_split_join_their_datagram(pcaps_dir: Path,
                                                          tmp_path: Path) -> None:
    # ipv4.pcap sends one datagram's fragments last-first: a split between them must
    # still credit every fragment to the datagram's category.
    src = (pcaps_dir / "ipv4.pcap").read_bytes()
    path = tmp_path / "frag.pcap"
    path.write_bytes(src)
    whole = classifier.analyze(str(path)).to_dict()
    boundaries = []
    pos = 24
    while pos < len(src):
        boundaries.append(pos)
        pos += 16 + int.from_bytes(src[pos + 8 : pos + 12], "little")
    for cut in boundaries[1:]:
        ranges = [(24, cut), (cut, len(src))]
        assert analyze_split(str(path), RULES, COMPILED, ranges).to_dict() == whole, cut


def test_a_false_boundary_falls_back_to_one_piece(long_capture: Path) -> None:
    size = long_capture.stat().st_size
    ranges = [(24, size // 2), (size // 2, size)]  # not a record boundary
    whole = classifier.analyze(str(long_capture)).to_dict()
    assert analyze_split(str(long_capture), RULES, COMPILED, ranges).to_dict() == whole


def test_damage_in_an_early_range_stops_the_reading_there(pcaps_dir: Path) -> None:
    path = pcaps_dir / "corrupt-record.pcap"
    whole = classifier.analyze(str(path)).to_dict()
    size = path.stat().st_size
    ranges = plan_ranges(str(path), 2, min_bytes=0, at=[1000])
    if ranges is None or len(ranges) < 2:
        pytest.skip("no boundary after the split point")
    merged = analyze_split(str(path), RULES, COMPILED, ranges).to_dict()
    assert merged == whole
    assert size > ranges[1][0]


def test_small_or_compressed_captures_are_not_split(pcaps_dir: Path) -> None:
    assert plan_ranges(str(pcaps_dir / "office365-mix.pcap"), 2) is None  # too small
    assert plan_ranges(str(pcaps_dir / "office365-mix.pcap.gz"), 2, min_bytes=0) is None
    assert plan_ranges(str(pcaps_dir / "office365-mix.pcapng"), 2, min_bytes=0) is None
