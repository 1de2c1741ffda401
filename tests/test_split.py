"""A capture split into byte ranges gives, merged, exactly the result of one piece."""

from __future__ import annotations

import itertools
import pickle
import struct
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import classifier
import classifier.split
from classifier.flows import N_STATS, Flows, HeldRecords
from classifier.lookup import compile_rules
from classifier.rules import load_rules
from classifier.sources.ranges import Interface
from classifier.split import analyze_split, plan_ranges
from tests import writers as w

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
    if ranges is None:  # no boundary found after the points: one piece
        ranges = [(0 if path.suffix == ".pcapng" else 24, path.stat().st_size)]
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
    assert plan_ranges(str(pcaps_dir / "office365-mix.pcapng.gz"), 2, min_bytes=0) is None
    assert plan_ranges(str(pcaps_dir / "office365-mix.pcapng"), 2) is None  # too small


# -- pcapng: split by block structure, each range with its section's state -----------


def _pcap_records(path: Path) -> list[w.Record]:
    data = path.read_bytes()
    out, pos = [], 24
    while pos + 16 <= len(data):
        _, _, incl, orig = struct.unpack_from("<IIII", data, pos)
        out.append((0, data[pos + 16 : pos + 16 + incl], orig))
        pos += 16 + incl
    return out


def long_pcapng_bytes(pcaps_dir: Path) -> bytes:
    """The mix, fragments sent last-first and VLAN samples' packets, three times, each
    time in two sections (little- then big-endian) with an interface described
    mid-section, simple packet blocks (which take the previous packet's timestamp)
    and an unknown block: a split can fall before any of them."""
    # A steady 1 ms pace: no flow is idle long enough to end.
    recs = [(1_428_312_600 * 10**9 + i * 10**6, data, orig) for i, (_, data, orig) in
            enumerate(r for n in ("office365-mix.pcap", "ipv4.pcap", "ethernet-vlan.pcap")
                      for r in _pcap_records(pcaps_dir / n))]
    third = len(recs) // 3
    blocks = []
    for copy in range(3):
        rs = [(ts + copy * 2 * 10**9, data, orig) for ts, data, orig in recs]
        blocks += [w.shb(), w.idb(1, tsresol=9)]
        blocks += [w.epb(0, w.units_of(ts, 9), d, o) for ts, d, o in rs[:third]]
        blocks.append(w.idb(1, tsresol=6, tsoffset=1))  # microseconds, 1 s later
        blocks += [w.epb(1, w.units_of(ts - 10**9, 6), d, o)
                   for ts, d, o in rs[third : third + 20]]
        blocks += [w.spb(d) for _, d, _ in rs[third + 20 : third + 30]]
        blocks.append(w.unknown_block())
        blocks += [w.epb(0, w.units_of(ts, 9), d, o) for ts, d, o in rs[third + 30 : 2 * third]]
        blocks += [w.shb(big=True), w.idb(1, big=True, tsresol=0x80 | 20)]
        blocks += [w.spb(d, big=True) for _, d, _ in rs[2 * third : 2 * third + 5]]
        blocks += [w.epb(0, w.units_of(ts, 0x80 | 20), d, o, big=True)
                   for ts, d, o in rs[2 * third + 5 :]]
    return b"".join(blocks)


@pytest.fixture(scope="module")
def long_pcapng(tmp_path_factory: pytest.TempPathFactory, pcaps_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("split") / "long.pcapng"
    path.write_bytes(long_pcapng_bytes(pcaps_dir))
    return path


def _block_starts(data: bytes) -> list[int]:
    starts, pos, big = [], 0, False
    while pos < len(data):
        if struct.unpack_from("<I", data, pos)[0] == 0x0A0D0D0A:
            big = struct.unpack_from("<I", data, pos + 8)[0] != 0x1A2B3C4D
        starts.append(pos)
        pos += struct.unpack_from(">I" if big else "<I", data, pos + 4)[0]
    return starts


def test_pcapng_ranges_start_at_blocks_with_the_opening_state(long_pcapng: Path) -> None:
    data = long_pcapng.read_bytes()
    size = len(data)
    ranges = plan_ranges(str(long_pcapng), 4, min_bytes=0)
    assert ranges is not None and len(ranges) == 4
    assert ranges[0].start == 0 and ranges[0].state is None
    assert ranges[-1].stop == size
    blocks = set(_block_starts(data))
    for (_, stop), later in itertools.pairwise(ranges):
        assert later.start == stop and later.start in blocks
        assert later.state is not None and not later.state.big
        assert later.state.interfaces == (Interface(1, 0, (False, 9)),)


def test_pcapng_two_ranges_equal_one_piece(long_pcapng: Path) -> None:
    whole = classifier.analyze(str(long_pcapng)).to_dict()
    size = long_pcapng.stat().st_size
    assert whole["captures"][0]["packets"] == 3 * 435
    assert _split(long_pcapng, [size // 2]) == whole
    assert _split(long_pcapng, [size // 3, 2 * size // 3]) == whole


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_pcapng_any_split_points_give_the_same_result(long_pcapng: Path,
                                                      data: st.DataObject) -> None:
    size = long_pcapng.stat().st_size
    at = data.draw(st.lists(st.integers(1, size - 1), min_size=1, max_size=4, unique=True))
    assert _split(long_pcapng, sorted(at)) == classifier.analyze(str(long_pcapng)).to_dict()


def test_pcapng_every_block_boundary_as_a_split(long_pcapng: Path) -> None:
    # Each block in turn starts the second range: sections, interfaces described
    # mid-section and simple packet blocks met before it are carried over.
    whole = classifier.analyze(str(long_pcapng)).to_dict()
    size = long_pcapng.stat().st_size
    starts = _block_starts(long_pcapng.read_bytes())
    # Around the first copy's mid-section interface (block 147), simple packet blocks
    # (168-177), unknown block (178) and big-endian section (294-300).
    for cut in [*starts[1 :: len(starts) // 20], *starts[144:182], *starts[292:302]]:
        ranges = [(0, cut), (cut, size)]
        assert analyze_split(str(long_pcapng), RULES, COMPILED, ranges).to_dict() == whole, cut


def test_pcapng_false_boundary_falls_back_to_one_piece(long_pcapng: Path) -> None:
    size = long_pcapng.stat().st_size
    cut = size // 2 + 2  # inside a block
    whole = classifier.analyze(str(long_pcapng)).to_dict()
    assert analyze_split(str(long_pcapng), RULES, COMPILED,
                         [(0, cut), (cut, size)]).to_dict() == whole


def test_sequential_jobs_and_split_agree_on_pcapng(long_pcapng: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classifier.split, "SPLIT_MIN_BYTES", 0)
    one = classifier.analyze(str(long_pcapng), jobs=1).to_dict()
    assert plan_ranges(str(long_pcapng), 2) is not None  # --jobs 2 splits it
    assert classifier.analyze(str(long_pcapng), jobs=2).to_dict() == one
    assert classifier.analyze(str(long_pcapng), jobs=3).to_dict() == one


def test_a_large_capture_among_small_ones_is_split_and_started_first(
        long_capture: Path, long_pcapng: Path, pcaps_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from classifier.parallel import plan_tasks

    monkeypatch.setattr(classifier.split, "SPLIT_MIN_BYTES", 100_000)
    small = [str(pcaps_dir / "ipv4.pcap"), str(pcaps_dir / "office365-mix.pcapng.gz")]
    files = [small[0], str(long_capture), small[1], str(long_pcapng)]
    tasks = plan_tasks(files, 2)
    sizes = [Path(files[i]).stat().st_size if r is None else r.stop - r.start
             for i, r in tasks]
    assert sizes == sorted(sizes, reverse=True)  # the largest first
    split = {i for i, r in tasks if r is not None}
    assert split == {1, 3}  # the two large captures, not the small ones
    for i in split:
        ranges = sorted(r for j, r in tasks if j == i and r is not None)
        assert len(ranges) == 2 and ranges[0].stop == ranges[1].start
        assert ranges[-1].stop == Path(files[i]).stat().st_size
    one = classifier.analyze(files, jobs=1).to_dict()
    assert classifier.analyze(files, jobs=2).to_dict() == one


def test_equal_captures_are_not_split(long_capture: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from classifier.parallel import plan_tasks

    monkeypatch.setattr(classifier.split, "SPLIT_MIN_BYTES", 0)
    files = []
    for k in range(4):
        files.append(str(tmp_path / f"{k}.pcap"))
        Path(files[-1]).write_bytes(long_capture.read_bytes())
    assert [r for _, r in plan_tasks(files, 2)] == [None] * 4  # four tasks already
    assert len(plan_tasks(files[:3], 2)) == 6  # three on two jobs: halves even out


# -- flows with an idle gap near a split ------------------------------------------------


def _udp_frame(sport: int, host: int = 1) -> bytes:
    """A UDP packet from 10.0.0.0/16 ``host``, port ``sport``, to a Teams relay."""
    udp = struct.pack(">HHHH", sport, 3478, 28, 0) + b"\0" * 20
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     bytes([10, 0, host >> 8, host & 255]), bytes([52, 112, 0, 1]))
    return b"\0" * 12 + b"\x08\x00" + ip + udp


@pytest.fixture
def gap_capture(tmp_path: Path) -> tuple[Path, int]:
    """One UDP flow, 10 packets, silent 400 s (over the 300 s idle timeout), 10 more;
    then 3 packets of another flow. Read in one piece: three flow records."""
    t0 = 1_700_000_000 * 10**9
    frame = _udp_frame(50000)
    recs = [(t0 + i * 10**7, frame, len(frame)) for i in range(10)]
    recs += [(t0 + 400 * 10**9 + i * 10**7, frame, len(frame)) for i in range(10)]
    recs += [(t0 + 410 * 10**9 + i * 10**7, _udp_frame(50001), 62) for i in range(3)]
    path = tmp_path / "gap.pcap"
    path.write_bytes(w.pcap(recs))
    return path, 16 + len(frame)


def test_a_flow_idle_across_the_split_ends_there(gap_capture: tuple[Path, int]) -> None:
    path, record = gap_capture
    whole = classifier.analyze(str(path)).to_dict()
    assert whole["flows_summary"]["flows"] == 3
    cut = 24 + 10 * record  # the split falls in the silence
    ranges = [(24, cut), (cut, path.stat().st_size)]
    assert analyze_split(str(path), RULES, COMPILED, ranges).to_dict() == whole


def test_a_flow_idle_inside_the_later_range_joins_across_the_split(
        gap_capture: tuple[Path, int]) -> None:
    path, record = gap_capture
    whole = classifier.analyze(str(path)).to_dict()
    cut = 24 + 5 * record  # the flow's first five packets, then the rest and the silence
    ranges = [(24, cut), (cut, path.stat().st_size)]
    assert analyze_split(str(path), RULES, COMPILED, ranges).to_dict() == whole


@pytest.mark.parametrize("fixture", ["long_capture", "long_pcapng"])
def test_only_ranges_after_the_first_hold_flow_records_back(
        fixture: str, request: pytest.FixtureRequest) -> None:
    """A range's first flow records are held for the merge only when a range comes
    before it: the first range's would cross between processes for nothing."""
    from classifier.pipeline import Options
    from classifier.split import _scan_range

    path = request.getfixturevalue(fixture)
    ranges = plan_ranges(str(path), 3, min_bytes=0)
    assert ranges is not None and len(ranges) == 3
    holds = [_scan_range(str(path), RULES, r, Options())[0].agg.flow_table.hold_first
             for r in ranges]
    assert holds == [False, True, True]


@pytest.mark.parametrize(("max_packets", "held_rows"), [(1, None), (65_536, None), (1, 1)])
def test_held_records_of_their_own_and_after_a_gap_stay_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_packets: int,
        held_rows: int | None) -> None:
    """Flows first seen soon after the split that end inside the later range (found
    idle while it is read, in batches of one packet) are held for the merge: one
    continues a flow of the first range only after the idle timeout (read in one
    piece, two records), the others continue nothing (records of their own).
    ``held_rows``: the held records beyond it wait in a file, and are merged one
    batch at a time."""
    import functools

    import classifier.flows
    import classifier.pipeline as pipeline
    from classifier.sources import open_capture

    monkeypatch.setattr(pipeline, "open_capture",
                        functools.partial(open_capture, max_packets=max_packets))
    options = None
    if held_rows is not None:
        monkeypatch.setattr(classifier.flows, "HELD_ROWS", held_rows)
        (tmp_path / "spill").mkdir()
        options = pipeline.Options(spill_dir=str(tmp_path / "spill"))
    t0 = 1_700_000_000 * 10**9
    s = 10**9
    a, c, d, e = (_udp_frame(p) for p in (50000, 50002, 50003, 50004))
    recs = [(t0 + i * 10**7, a, len(a)) for i in range(10)]  # A, before the split
    recs.append((t0 + 250 * s, c, len(c)))  # C: the later range begins here
    recs += [(t0 + 400 * s + i * 10**7, a, len(a)) for i in range(10)]  # A after 400 s
    recs += [(t0 + 420 * s + i * 10**7, d, len(d)) for i in range(3)]  # D
    recs.append((t0 + 900 * s, e, len(e)))  # E: A, C and D have ended by now
    path = tmp_path / "held.pcap"
    path.write_bytes(w.pcap(recs))
    whole = classifier.analyze(str(path)).to_dict()
    assert whole["flows_summary"]["flows"] == 5
    cut = 24 + 10 * (16 + len(a))
    ranges = [(24, cut), (cut, path.stat().st_size)]
    assert analyze_split(str(path), RULES, COMPILED, ranges, options=options).to_dict() == whole
    if options is not None:
        assert list((tmp_path / "spill").iterdir()) == []  # read, then deleted


def _flows(keys: list[int]) -> Flows:
    n = len(keys)
    stats = np.zeros((n, N_STATS), np.int64)
    stats[:, 0] = keys
    return Flows(np.array(keys, np.int64).repeat(6).reshape(n, 6), stats,
                 np.ones((n, 4), np.int8), np.full((n, 4), 7, np.int64))


def test_held_records_beyond_the_bound_wait_in_a_file_and_come_back_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the newest HELD_ROWS stay in memory; the rest, pickled with the table,
    are read back (by another process: by name) in order and the file deleted."""
    import pickle

    import classifier.flows

    monkeypatch.setattr(classifier.flows, "HELD_ROWS", 4)
    held = HeldRecords(str(tmp_path))
    for chunk in ([1, 2, 3], [4, 5], [6], [7, 8, 9, 10, 11], [12]):
        held.append(_flows(chunk))
        assert held.in_memory <= 4
    assert len(held) == 12 and len(held.paths) == 4 and sum(held.spilled) == 11
    copy = pickle.loads(pickle.dumps(held))
    batches = list(copy.batches([""]))
    assert [int(k) for b in batches for k in b.keys[:, 0]] == list(range(1, 13))
    assert all(len(b) <= 4 + 4 for b in batches)  # chunks gathered to about the bound
    for b in batches:
        np.testing.assert_array_equal(b.stats[:, 0], b.keys[:, 0])
        assert (b.dscp_val == 1).all() and (b.dscp_cnt == 7).all()
    assert list(tmp_path.iterdir()) == []
    in_memory = HeldRecords(None)  # no directory: all stay in memory
    for chunk in ([1, 2, 3], [4, 5, 6, 7, 8]):
        in_memory.append(_flows(chunk))
    assert in_memory.paths == [] and in_memory.in_memory == 8


def test_two_jobs_spill_held_records_and_leave_no_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process pool gives its ranges a temporary directory for held records (the
    bound lowered to one record here), and removes it. Forty flows on both sides of
    the split end (idle) inside the later range: held, then joined."""
    import tempfile

    import classifier.flows

    t0 = 1_700_000_000 * 10**9
    recs = [(t0 + (k * 40 + i) * 10**6, _udp_frame(50000 + i), 62)
            for k in range(10) for i in range(40)]
    recs.append((t0 + 900 * 10**9, _udp_frame(40000), 62))  # the others are idle by now
    path = tmp_path / "many.pcap"
    path.write_bytes(w.pcap(recs))
    (tmp_path / "tmp").mkdir()
    # Batches of 16 packets: the table is swept for idle flows between them.
    import functools

    import classifier.pipeline as pipeline
    from classifier.sources import open_capture

    monkeypatch.setattr(pipeline, "open_capture",
                        functools.partial(open_capture, max_packets=16))

    monkeypatch.setattr(classifier.flows, "HELD_ROWS", 1)
    monkeypatch.setattr(classifier.split, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    read_back: list[bool] = []
    batches = HeldRecords.batches

    def watched(self: HeldRecords, names: list[str], *, again: bool = False) -> object:
        read_back.append(bool(self.paths))
        return batches(self, names, again=again)

    monkeypatch.setattr(HeldRecords, "batches", watched)
    whole = classifier.analyze(str(path)).to_dict()
    assert whole["flows_summary"]["flows"] == 41
    assert classifier.analyze(str(path), jobs=2).to_dict() == whole
    assert any(read_back)  # some held records came back from a file
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("max_packets", [1, 7, 65_536])
def test_categories_only_counts_held_back_fragments_once(
        pcaps_dir: Path, monkeypatch: pytest.MonkeyPatch, compiled: bool,
        max_packets: int) -> None:
    # ipv4.pcap sends a datagram's fragments last-first: they are held back, then
    # counted with their datagram (categories only: taken out of the batch's counters
    # instead of copied out of the batch).
    import functools
    import json

    import classifier.pipeline as pipeline
    from classifier.pipeline import Options
    from classifier.sources import open_capture

    want = json.loads((pcaps_dir / "expected.json").read_text())["ipv4.pcap"]
    monkeypatch.setattr(pipeline, "open_capture",
                        functools.partial(open_capture, max_packets=max_packets))
    got = pipeline.analyze_capture(str(pcaps_dir / "ipv4.pcap"), COMPILED, compiled=compiled,
                                   options=Options(details=False)).to_dict()
    assert got["categories"] == want["categories"]
    assert got["totals"] == {"packets": want["packets"], "bytes": want["bytes"]}
    assert got["anomalies"] == want["anomalies"]


def _entries(keys: list[int]) -> dict[tuple[int, ...], tuple[int, int, int, int]]:
    return {(k,): (k, k + 1, k + 2, k % 2) for k in keys}


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), *(st.lists(st.integers(0, 9), max_size=8, unique=True)
                            for _ in range(4)), st.booleans(), st.booleans())
def test_fragment_tables_merge_as_one_by_one(size: int, first: list[int],
                                             earliest: list[int], later_first: list[int],
                                             later_earliest: list[int], cross_ours: bool,
                                             cross_later: bool) -> None:
    """Merging the remembered first fragments in bulk keeps what remembering them one by
    one, in order, keeps: the newest ``size`` of them, in the same order, and the
    earliest ones while there is room."""
    from classifier.fragments import FragmentTable

    ours, later = FragmentTable(0, size), FragmentTable(0, size)
    ours.first, ours.earliest = _entries(first[:size]), _entries(earliest[:size])
    later.first, later.earliest = _entries(later_first[:size]), _entries(later_earliest[:size])
    want_first, want_earliest = dict(ours.first), dict(ours.earliest)
    for key, info in later.earliest.items():
        if key not in want_earliest and len(want_earliest) < size:
            want_earliest[key] = info
    for key, info in later.first.items():
        want_first.pop(key, None)
        want_first[key] = info
        if len(want_first) > size:
            del want_first[next(iter(want_first))]
        if key not in want_earliest and len(want_earliest) < size:
            want_earliest[key] = info
    # The same, with either table having crossed between processes (packed), and then
    # a third range taken in (the merged entries unpacked only then).
    third = _entries(later_earliest[:size])
    crossed = [pickle.loads(pickle.dumps(t)) if c else deepcopy(t)
               for t, c in ((ours, cross_ours), (later, cross_later))]
    assert ours.merge(later) is None
    assert list(ours.first.items()) == list(want_first.items())
    assert list(ours.earliest.items()) == list(want_earliest.items())
    assert crossed[0].merge(crossed[1]) is None
    last = FragmentTable(0, size)
    last.first = third
    assert crossed[0].merge(last) is None
    ours.merge(last)
    assert list(crossed[0].first.items()) == list(ours.first.items())
    assert list(crossed[0].earliest.items()) == list(ours.earliest.items())


def test_dscp_values_beyond_a_flows_slots_merge_as_in_one_piece(tmp_path: Path) -> None:
    """A flow marked with six DSCP values, three on each side of the split and one on
    both: the merged flow keeps the same four values and counts the rest as other."""
    pytest.importorskip("scapy")
    from scapy.all import IP, UDP, Ether, Raw, raw

    records = []
    for n, dscp in enumerate([1, 2, 3, 1, 2, 3, 3, 4, 5, 6, 5, 6]):
        pkt = (Ether() / IP(src="10.0.0.1", dst="10.0.0.2", tos=dscp << 2)
               / UDP(sport=50000, dport=3478) / Raw(b"a" * 100))
        records.append((1_700_000_000_000_000_000 + n * 1_000_000, raw(pkt), len(raw(pkt))))
    path = tmp_path / "dscp.pcap"
    path.write_bytes(w.pcap(records))
    whole = classifier.analyze(str(path)).to_dict()
    record = 24 + 16 + len(records[0][1])
    assert _split(path, [24 + 6 * record]) == whole
    reported = whole["qos"]["reported"]
    assert [r["dscp"] for r in reported] == ["1:2 2:2 3:3 4:1 more:4"]


def test_only_ranges_after_the_first_keep_their_earliest_first_fragments(
        long_capture: Path) -> None:
    """A range's earliest first fragments are for the range before it; the first range
    and a whole capture have none before them, and keep none."""
    from classifier.pipeline import scan

    size = long_capture.stat().st_size
    ranges = plan_ranges(str(long_capture), 2, min_bytes=0, at=[size // 2])
    assert ranges is not None
    parts = [scan(str(long_capture), COMPILED, byte_range=r, compiled=True) for r in ranges]
    whole = scan(str(long_capture), COMPILED, compiled=True)
    assert whole.fragments.first and parts[0].fragments.first and parts[1].fragments.first
    assert not whole.fragments.earliest and not parts[0].fragments.earliest
    assert parts[1].fragments.earliest


@pytest.mark.parametrize("spill", [False, True])
def test_a_flow_joined_once_by_the_earlier_of_two_held_records(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, spill: bool) -> None:
    """Two held records of one flow (it was pushed out of the later range's full
    table, then seen again), in one batch or (``spill``) two: the first continues the
    flow of the range before and ends it; the second is a record of its own, as in
    one piece."""
    import classifier.flows
    from classifier.flows import S_FIRST, S_LAST, S_PK_UP, FlowTable, join_held
    from classifier.measures import Series

    monkeypatch.setattr(classifier.flows, "HELD_ROWS", 1)
    emitted: list[Flows] = []
    first = FlowTable(other=0, n_categories=2, sink=emitted.append)
    first.keys[0] = 7
    first.stats[0, [S_FIRST, S_LAST, S_PK_UP]] = (100, 200, 5)
    first.count = 1
    first._reindex()
    later = FlowTable(other=0, n_categories=2, hold_first=True,
                      spill_dir=str(tmp_path) if spill else None)
    for start, packets in ((300, 2), (400, 3)):
        record = _flows([7])
        record.stats[0, [S_FIRST, S_LAST, S_PK_UP]] = (start, start + 10, packets)
        record.dscp_val[:] = 0
        later.held_first.append(record)
    gone = np.zeros(first.count, bool)
    join_held(first, later, Series(10**9, 2), gone)
    records = Flows.concat(emitted, [""])
    assert sorted(records.stats[:, S_PK_UP].tolist()) == [3, 7]  # 5 + 2, then 3 alone
    assert gone.tolist() == [True] and list(tmp_path.iterdir()) == []  # read, deleted


@pytest.mark.parametrize("held_reported", [0, 400])
def test_held_records_counted_as_held_are_taken_back_when_they_join(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, held_reported: int) -> None:
    """Held records are counted as records of their own as they are held; the merge
    takes back those that continue a flow. Here 5 audio calls without their DSCP
    marking continue across the split, 150 more begin after it, all end (idle) inside
    the later range: 155 flows to list, the worst 100 by packets. With the held
    summary keeping 100 entries (``held_reported`` 0), taking back the 5 calls (the
    worst) leaves 95 of them: the merge counts the records again, from the records.
    With 400 more, the summary alone is exact."""
    import functools

    import classifier.flows
    import classifier.pipeline as pipeline
    from classifier.sources import open_capture

    monkeypatch.setattr(pipeline, "open_capture",
                        functools.partial(open_capture, max_packets=64))
    monkeypatch.setattr(classifier.flows, "HELD_REPORTED", held_reported)
    again: list[int] = []
    emit_own = classifier.flows._emit_own

    def watched(first: object, rows: Flows, join: np.ndarray) -> None:
        again.append(len(rows) - len(join))
        emit_own(first, rows, join)  # type: ignore[arg-type]

    monkeypatch.setattr(classifier.flows, "_emit_own", watched)
    t0 = 1_700_000_000 * 10**9
    recs = [(t0 + i * 10**7, _udp_frame(50000 + c), 62) for i in range(3) for c in range(5)]
    cut = 24 + len(recs) * (16 + 62)
    recs += [(t0 + 10**9 + i * 10**7, _udp_frame(50000 + c), 62)
             for i in range(40) for c in range(5)]
    recs += [(t0 + 2 * 10**9 + i * 10**6, _udp_frame(50000, 2 + f), 62)
             for f in range(150) for i in range(1 + f % 7)]
    recs.append((t0 + 900 * 10**9, _udp_frame(40000), 62))  # the others are idle by now
    path = tmp_path / "calls.pcap"
    path.write_bytes(w.pcap(sorted(recs, key=lambda r: r[0])))
    whole = classifier.analyze(str(path)).to_dict()
    assert whole["flows_summary"]["flows"] == 156
    assert len(whole["qos"]["reported"]) == 100
    assert [r["packets"] for r in whole["qos"]["reported"][:5]] == [43] * 5
    ranges = [(24, cut), (cut, path.stat().st_size)]
    assert analyze_split(str(path), RULES, COMPILED, ranges).to_dict() == whole
    assert (sum(again) == 150) == (held_reported == 0)


def test_a_range_taken_over_and_joined_in_its_process_keeps_holding_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three ranges; the process that read the third takes over the second and joins
    them before the merge (as after a take-over). A flow of the first range, silent
    in the second, ends inside the third: its record there must stay held through
    that join, for the merge to join it to the first range's."""
    import functools

    import classifier.pipeline as pipeline
    from classifier.pipeline import Options, finish
    from classifier.sources import open_capture
    from classifier.split import _scan_range, join_parts, trim_for_merge

    monkeypatch.setattr(pipeline, "open_capture",
                        functools.partial(open_capture, max_packets=1))
    t0 = 1_700_000_000 * 10**9
    x, y, z = (_udp_frame(p) for p in (50000, 50001, 50002))
    recs = [(t0 + i * 10**7, x, len(x)) for i in range(10)]
    recs += [(t0 + 10 * 10**9 + i * 10**7, y, len(y)) for i in range(3)]  # X silent
    recs += [(t0 + 20 * 10**9 + i * 10**7, x, len(x)) for i in range(10)]  # X again
    recs += [(t0 + 400 * 10**9 + i * 10**7, z, len(z)) for i in range(3)]  # X idle now
    path = tmp_path / "three.pcap"
    path.write_bytes(w.pcap(recs))
    whole = classifier.analyze(str(path)).to_dict()
    assert whole["flows_summary"]["flows"] == 3
    rec = 16 + len(x)
    a, b, c = ((24, 24 + 10 * rec), (24 + 10 * rec, 24 + 13 * rec),
               (24 + 13 * rec, path.stat().st_size))
    pa, pb, pc = (_scan_range(str(path), RULES, r, Options()) for r in (a, b, c))
    bc = join_parts(str(path), [b, c], [pb, pc], COMPILED, Options())
    assert bc is not None
    trim_for_merge(bc[0])
    joined = join_parts(str(path), [a, (b[0], c[1])], [pa, bc], COMPILED, Options())
    assert joined is not None
    assert finish(joined[0]).to_dict() == whole
