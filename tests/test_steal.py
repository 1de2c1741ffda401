"""A process left without work takes over the end of a range another is reading: the
reader stops at the moved end, and the two parts merge into the one-piece result."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import classifier
import classifier.steal
from classifier.lookup import compile_rules
from classifier.parallel import analyze_parallel, plan_tasks
from classifier.pipeline import scan
from classifier.rules import load_rules
from classifier.sources import pcap
from classifier.sources.ranges import ByteRange
from classifier.split import merge_parts
from classifier.steal import Board

RULES = load_rules()
COMPILED = compile_rules(RULES)
CTX = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def long_capture(tmp_path_factory: pytest.TempPathFactory, pcaps_dir: Path) -> Path:
    """Samples' records repeated to a few MB: fragments, flows and VLANs straddle any cut."""
    header = (pcaps_dir / "office365-mix.pcap").read_bytes()[:24]
    bodies = [(pcaps_dir / n).read_bytes()[24:] for n in
              ("office365-mix.pcap", "ipv4.pcap", "ethernet-vlan.pcap", "ipv6.pcap")]
    path = tmp_path_factory.mktemp("steal") / "long.pcap"
    path.write_bytes(header + b"".join(bodies) * 60)
    return path


@pytest.fixture(scope="module")
def whole(long_capture: Path) -> dict[str, object]:
    return classifier.analyze(str(long_capture)).to_dict()


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader's pace counts from its first claim (no wait to judge it)."""
    monkeypatch.setattr(classifier.steal, "_SETTLED_NS", -1)


def _counts(result: dict[str, object]) -> dict[str, object]:
    """All but the flow records and the per-flow QoS: with batches this small, where
    the flow table is swept moves with the batches on captures whose clock jumps back
    (records repeated), in one piece as in two."""
    return {k: v for k, v in result.items() if k not in ("flows_summary", "qos")}


def _board(path: Path, tasks: int = 1, **kw: object) -> Board:
    opts: dict[str, object] = {"min_seconds": 0.0, "min_bytes": 0, **kw}
    return Board(CTX, [str(path)], tasks, movable=[True], **opts)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(read=st.floats(0.0, 0.95), pace=st.floats(0.0, 1e9))
def test_a_taken_end_reads_as_one_piece(long_capture: Path, whole: dict[str, object],
                                        settled: None, read: float, pace: float) -> None:
    """The reader has claimed a share ``read`` of its range when the end is taken."""
    size = long_capture.stat().st_size
    board = _board(long_capture)
    board.started()
    claim = board.begin(0, 0, 24, size)
    reached = claim.claim(24 + int((size - 24) * read))
    assert reached == size
    taken = board.take(pace)
    if taken is None:  # no record boundary after the cut point: nothing taken
        assert claim.claim(size) == size
        return
    file, rest = taken
    assert file == 0 and rest.stop == size
    assert 24 + int((size - 24) * read) <= rest.start < size
    assert claim.claim(rest.start) == rest.start  # the reader's end moved back
    first = scan(str(long_capture), COMPILED, byte_range=ByteRange(24, size, limit=claim),
                 compiled=True)
    assert first.end == rest.start
    later = scan(str(long_capture), COMPILED, byte_range=rest, compiled=True)
    assert claim.end() == rest.start and rest.limit is not None
    merged = merge_parts(str(long_capture), [(24, rest.start), (rest.start, size)],
                         [(first, ByteRange(0, 0).report), (later, rest.report)], COMPILED,
                         None)
    assert merged.to_dict() == whole


def test_the_reader_stops_where_the_end_moved_while_it_reads(
        long_capture: Path, whole: dict[str, object], settled: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The end moves between two batches of the reader (small batches here)."""
    monkeypatch.setattr(pcap, "BATCH_BYTES", 32 << 10)
    size = long_capture.stat().st_size
    board = _board(long_capture)
    board.started()
    claim = board.begin(0, 0, 24, size)
    took: list[ByteRange] = []

    class Thief:
        calls = 0

        def claim(self, upto: int) -> int:
            self.calls += 1
            if self.calls == 5:  # after four batches
                taken = board.take()
                assert taken is not None
                took.append(taken[1])
            return claim.claim(upto)

    first = scan(str(long_capture), COMPILED, byte_range=ByteRange(24, size, limit=Thief()),
                 compiled=True)
    (rest,) = took
    assert first.end == rest.start == claim.end()
    # The cut is beyond what four batches may have reached.
    assert rest.start >= 24 + 4 * (32 << 10)
    later = scan(str(long_capture), COMPILED, byte_range=rest, compiled=True)
    merged = merge_parts(str(long_capture), [(24, rest.start), (rest.start, size)],
                         [(first, ByteRange(0, 0).report), (later, rest.report)], COMPILED,
                         None)
    assert _counts(merged.to_dict()) == _counts(whole)


def test_nothing_is_taken_while_a_task_waits_or_from_a_small_remainder(
        long_capture: Path, settled: None) -> None:
    size = long_capture.stat().st_size
    board = _board(long_capture, tasks=2)
    board.started()
    claim = board.begin(0, 0, 24, size)
    claim.claim(1000)
    assert board.take() is None  # the second planned task has not started
    board.started()
    assert board.take() is not None
    small = _board(long_capture, min_bytes=size)
    small.started()
    small.begin(0, 0, 24, size).claim(1000)
    assert small.take() is None
    ended = _board(long_capture)
    ended.started()
    gone = ended.begin(0, 0, 24, size)
    gone.claim(1000)
    gone.end()
    assert ended.take() is None  # a range read to its end has nothing to give


def test_a_reader_that_has_just_begun_is_waited_for(long_capture: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The last task starts as another process ends its own: its pace cannot be
    judged yet, so the idle process waits (its clock runs on in the sleep) instead of
    leaving it all the rest; a reader long begun that never claimed is not waited for."""
    clock = [0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += int(seconds * 1e9)

    monkeypatch.setattr(classifier.steal.time, "monotonic_ns", lambda: clock[0])
    monkeypatch.setattr(classifier.steal.time, "sleep", sleep)
    size = long_capture.stat().st_size
    board = _board(long_capture)
    board.started()
    board.begin(0, 0, 24, size).claim(1000)
    clock[0] = 5_000_000  # 5 ms after the reader began
    taken = board.take()
    assert taken is not None
    assert slept == [pytest.approx(0.015)]  # until 20 ms: the pace can be judged
    stale = _board(long_capture)
    stale.started()
    stale.begin(0, 0, 24, size)  # opened, never claimed
    clock[0] += 50_000_000
    slept.clear()
    assert stale.take() is None and slept == []


@pytest.mark.parametrize(("thief", "reader", "kept"), [
    ("worker", "worker", 0.5),  # the same pace: half each
    # The worker's result must cross: it ends HANDOVER_SECONDS sooner (1 MB a second,
    # 2 MB left: half of that time's bytes less than half for it, whichever takes).
    ("maker", "worker", 0.5 - classifier.steal.HANDOVER_SECONDS / 4),
    ("worker", "maker", 0.5 + classifier.steal.HANDOVER_SECONDS / 4),
])
def test_the_cut_lets_both_end_together_or_the_worker_first(
        long_capture: Path, monkeypatch: pytest.MonkeyPatch, thief: str, reader: str,
        kept: float) -> None:
    """The reader has read 1 MB in 1 s and 2 MB are left; this process reads as fast.
    The process that made the board merges the results: a worker, taking from it or
    taken from, should end HANDOVER_SECONDS (0.07 s, 70 KB here) sooner, so it reads
    35 KB less than half of what is left."""
    clock = [0]
    monkeypatch.setattr(classifier.steal.time, "monotonic_ns", lambda: clock[0])
    me, other = classifier.steal.os.getpid(), -7
    board = _board(long_capture)
    board.parent = me if "maker" in (thief, reader) else -9
    board.started()
    mb = 1 << 20
    monkeypatch.setattr(classifier.steal.os, "getpid",
                        lambda: board.parent if reader == "maker" else other)
    claim = board.begin(0, 0, 24, 24 + 3 * mb)
    claim.claim(24 + mb)
    clock[0] = 1_000_000_000
    monkeypatch.setattr(classifier.steal.os, "getpid",
                        lambda: board.parent if thief == "maker" else other)
    taken = board.take(float(mb))
    assert taken is not None
    cut = taken[1].start
    # The cut: the first record boundary at or after the aimed point.
    assert 0 <= cut - (24 + mb + kept * 2 * mb) < 2048


def test_the_cut_follows_the_readers_recent_pace(long_capture: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader slows down as its flow table fills: 1 MB in its first 0.1 s, then
    0.1 MB in 0.2 s. Judged by that last pace (0.5 MB/s, not its average of 3.7), it
    keeps a third of the 1.9 MB left to a process reading 1 MB/s."""
    clock = [0]
    monkeypatch.setattr(classifier.steal.time, "monotonic_ns", lambda: clock[0])
    mb = 1 << 20
    board = _board(long_capture)
    board.parent = -7  # both workers
    board.started()
    claim = board.begin(0, 0, 24, 24 + 3 * mb)
    clock[0] = 100_000_000
    claim.claim(24 + mb)
    clock[0] = 300_000_000
    claim.claim(24 + mb + mb // 10)
    taken = board.take(float(mb))
    assert taken is not None
    left = 3 * mb - (mb + mb // 10)
    aimed = 24 + mb + mb // 10 + left / 3
    assert 0 <= taken[1].start - aimed < 2048


def test_a_much_faster_process_takes_almost_all(long_capture: Path, settled: None) -> None:
    size = long_capture.stat().st_size
    board = _board(long_capture)
    board.parent = -7  # both workers
    board.started()
    board.begin(0, 0, 24, size).claim(1000)
    taken = board.take(1e15)
    assert taken is not None
    assert taken[1].start < 1000 + 2048


def test_processes_that_take_over_give_the_sequential_result(
        long_capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        settled: None) -> None:
    """A small and a large capture on two processes: the small one's process takes
    over the end of the large one (small batches, any remainder taken); whichever
    way the run goes, the results are those of one process, and progress adds up."""
    monkeypatch.setattr(pcap, "BATCH_BYTES", 16 << 10)
    small = tmp_path / "small.pcap"
    data = long_capture.read_bytes()
    small.write_bytes(data[:24] + data[24:20000])
    files = [str(long_capture), str(small)]
    size = sum(Path(f).stat().st_size for f in files)
    seen: list[int] = []
    opts = classifier.pipeline.Options()
    got = analyze_parallel(files, RULES, jobs=2, options=opts, progress=seen.append,
                           tasks=plan_tasks(files, 2, split=False), steal_above=(0.0, 0))
    want = [classifier.analyze(f).to_dict() for f in files]
    assert [_counts(r.to_dict()) for r in got] == [_counts(w) for w in want]
    # Each piece reports its bytes: a whole capture from byte 0, a range its own.
    assert sum(seen) == size


def test_a_cut_the_reader_has_claimed_meanwhile_is_not_taken(
        long_capture: Path, settled: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The boundary is searched with the board unlocked: the reader may claim past it
    in the meantime, and the range is then left whole."""
    import classifier.split

    size = long_capture.stat().st_size
    board = _board(long_capture)
    board.started()
    claim = board.begin(0, 0, 24, size)
    claim.claim(1000)
    search = classifier.split.plan_ranges

    def racing(*args: object, **kw: object) -> object:
        found = search(*args, **kw)  # type: ignore[arg-type]
        claim.claim(size - 1)  # the reader gets past the cut meanwhile
        return found

    monkeypatch.setattr(classifier.split, "plan_ranges", racing)
    assert board.take() is None
    assert claim.claim(size) == size and claim.end() == size


def test_one_capture_on_two_jobs_leaves_this_process_the_larger_range(
        long_capture: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process reads the last range, and merges: the other range is the smaller
    by HANDOVER_SHARE of the capture, so that its result is in before the merge."""
    import classifier.parallel
    import classifier.split

    monkeypatch.setattr(classifier.split, "SPLIT_MIN_BYTES", 0)
    size = long_capture.stat().st_size
    tasks = plan_tasks([str(long_capture)], 2)
    ranges = sorted(r for _, r in tasks if r is not None)
    assert len(ranges) == 2 and ranges[0].stop == ranges[1].start
    aimed = size * (0.5 - classifier.parallel.HANDOVER_SHARE)
    assert 0 <= ranges[0].stop - aimed < 2048
    assert len(plan_tasks([str(long_capture)] * 2, 2)) == 4  # two captures, halved evenly


def test_only_plain_pcap_files_have_ends_that_move(pcaps_dir: Path, tmp_path: Path) -> None:
    """A gzip stream cannot be cut anywhere, a pcapng range's end is not claimed."""
    import gzip

    from classifier.parallel import _plain_pcap

    zipped = tmp_path / "mix.pcap.gz"
    zipped.write_bytes(gzip.compress((pcaps_dir / "office365-mix.pcap").read_bytes()))
    assert _plain_pcap(str(pcaps_dir / "office365-mix.pcap"))
    assert _plain_pcap(str(pcaps_dir / "bsd-null-be.pcap"))  # big-endian magic
    assert not _plain_pcap(str(pcaps_dir / "multi-section.pcapng"))
    assert not _plain_pcap(str(zipped))
    assert not _plain_pcap(str(pcaps_dir / "empty.pcap"))
    assert not _plain_pcap(str(tmp_path / "absent.pcap"))
    assert not _plain_pcap("-")


def test_with_names_or_resynchronisation_nothing_is_taken_over(
        long_capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        settled: None) -> None:
    """Names are decided at a flow's start, which a later part cannot see; damage
    skipped may run past an end that moved. No capture is cut for either."""
    monkeypatch.setattr(pcap, "BATCH_BYTES", 16 << 10)
    small = tmp_path / "small.pcap"
    data = long_capture.read_bytes()
    small.write_bytes(data[:24] + data[24:20000])
    files = [str(long_capture), str(small)]
    named = load_rules(Path(__file__).resolve().parents[1] / "rules" / "office365-services.toml")
    assert compile_rules(named).uses_names
    for rules, opts in ((named, classifier.pipeline.Options()),
                        (RULES, classifier.pipeline.Options(skip_damaged=True))):
        seen: list[int] = []
        got = analyze_parallel(files, rules, jobs=2, options=opts, progress=seen.append,
                               tasks=plan_tasks(files, 2, split=False),
                               steal_above=(0.0, 0))
        assert len(seen) == 2  # one piece a capture
        want = [classifier.analyze(f, rules=rules, options=opts).to_dict() for f in files]
        assert [r.to_dict() for r in got] == want


@pytest.mark.parametrize("maker", [True, False])
def test_only_a_worker_joins_what_it_took_to_its_own_range(
        long_capture: Path, settled: None, maker: bool) -> None:
    """This process reads the second half, then takes over the end of the first,
    whose reader is slow. A worker joins the two neighbouring pieces, to send one; the
    board's maker keeps them apart: it merges every piece in file order next, and
    joining would merge its own range twice. Either way the pieces cover the same."""
    import classifier.parallel as par

    size = long_capture.stat().st_size
    board = _board(long_capture, tasks=2, min_bytes=size // 8)
    board.parent = os.getpid() if maker else -7
    board.started()  # the first half's reader
    mid = _boundary(long_capture, size // 2)
    board.begin(0, 0, 24, mid).claim(24 + 1000)
    pieces = par._task(board, 1, 0, ByteRange(mid, size), RULES, classifier.pipeline.Options())
    spans = [(a, b) for _, a, b, _ in pieces]
    cut = min(a for a, _ in spans)
    assert 24 < cut < mid
    assert spans == ([(mid, size), (cut, mid)] if maker else [(cut, size)])


def _boundary(path: Path, at: int) -> int:
    """The first record boundary at or after ``at``."""
    from classifier.split import plan_ranges

    found = plan_ranges(str(path), 2, min_bytes=0, at=[at])
    assert found is not None
    return found[1].start
