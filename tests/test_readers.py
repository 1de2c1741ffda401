"""Readers: every record of a capture comes out once, exactly, in order."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifier.decode import Headers, decode_batch
from classifier.errors import CorruptCaptureError, NotACaptureError
from classifier.sources import open_capture
from classifier.sources import pcap as pcap_source
from classifier.sources import pcapng as pcapng_source
from tests import writers
from tests.strategies import CAPTURE_LINKTYPES, captures, link_frames, records

Record = writers.Record
fixture_ok = [HealthCheck.function_scoped_fixture]


def read_all(path: Path, **kw: object) -> tuple[list[tuple[int, bytes, int, int]], object]:
    reader = open_capture(str(path), **kw)  # type: ignore[arg-type]
    out = []
    for b in reader:
        for i in range(len(b)):
            o, c = int(b.offset[i]), int(b.caplen[i])
            out.append((int(b.ts[i]), bytes(b.buf[o : o + c]), int(b.wirelen[i]),
                        int(b.linktype[i])))
    return out, reader


modes = st.fixed_dictionaries({
    "compiled": st.booleans(),
    "max_packets": st.sampled_from([1, 3, 1000]),
    "window": st.sampled_from([4096, 8192, 1 << 20]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=fixture_ok)
@given(recs=records(), big=st.booleans(), ns=st.booleans(), gz=st.booleans(), mode=modes)
def test_pcap_reader_returns_every_record(tmp_path: Path, recs: list[Record], big: bool,
                                          ns: bool, gz: bool, mode: dict[str, object]) -> None:
    data = writers.pcap(recs, big=big, nanosecond=ns, linktype=101)
    path = tmp_path / "x.pcap"
    path.write_bytes(gzip.compress(data) if gz else data)
    got, reader = read_all(path, **mode)
    unit = 1 if ns else 1000
    assert got == [(ts // unit * unit, d, o, 101) for ts, d, o in recs]
    assert reader.complete  # type: ignore[attr-defined]
    assert reader.format == ("pcap.gz" if gz else "pcap")  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None, suppress_health_check=fixture_ok)
@given(recs=records(), sections=st.lists(st.booleans(), min_size=1, max_size=3),
       resol=st.sampled_from([6, 9, 3, 0x80 | 20, 0x80 | 10]), spb_every=st.integers(0, 4),
       mode=modes)
def test_pcapng_reader_returns_every_record(tmp_path: Path, recs: list[Record],
                                            sections: list[bool], resol: int, spb_every: int,
                                            mode: dict[str, object]) -> None:
    """Sections alternate byte order; each has two interfaces (Ethernet with the drawn
    resolution, raw IP with the default), unknown blocks, and some simple packet blocks."""
    blob = []
    expected = []
    per = -(-len(recs) // len(sections)) if recs else 0
    last = 0  # a simple packet block takes the previous packet's timestamp
    for s, big in enumerate(sections):
        blob += [writers.shb(big), writers.idb(1, big=big, tsresol=resol, snaplen=0),
                 writers.unknown_block(big=big), writers.idb(101, big=big)]
        for k, (ts, d, o) in enumerate(recs[s * per : (s + 1) * per]):
            if spb_every and k % spb_every == 1:
                blob.append(writers.spb(d, big=big))
                expected.append((last, d, len(d), 1))
                continue
            iface = k % 2
            r = resol if iface == 0 else 6
            units = writers.units_of(ts, r)
            blob.append(writers.epb(iface, units, d, o, big=big))
            last = writers.ns_of(units, r)
            expected.append((last, d, o, 1 if iface == 0 else 101))
            if k % 5 == 4:
                blob.append(writers.unknown_block(0x80000001, k, big=big))
    path = tmp_path / "x.pcapng"
    path.write_bytes(b"".join(blob))
    got, reader = read_all(path, **mode)
    assert got == expected
    assert reader.complete  # type: ignore[attr-defined]


@pytest.mark.parametrize("compiled", [False, True])
def test_pcap_cut_at_every_offset_keeps_the_complete_records(tmp_path: Path,
                                                             compiled: bool) -> None:
    recs = [(i * 10**9, bytes([i]) * (10 + i), 10 + i) for i in range(6)]
    data = writers.pcap(recs)
    ends = [24]
    for _, d, _ in recs:
        ends.append(ends[-1] + 16 + len(d))
    path = tmp_path / "cut.pcap"
    for cut in range(24, len(data)):
        path.write_bytes(data[:cut])
        got, reader = read_all(path, compiled=compiled)
        whole = sum(1 for e in ends[1:] if e <= cut)
        assert len(got) == whole
        at_boundary = cut in ends
        assert reader.complete is at_boundary  # type: ignore[attr-defined]
        if not at_boundary:
            assert reader.cut_at == ends[whole]  # type: ignore[attr-defined]


@pytest.mark.parametrize("compiled", [False, True])
def test_corrupt_record_length_names_its_offset(tmp_path: Path, compiled: bool) -> None:
    recs = [(0, b"a" * 20, 20), (0, b"b" * 20, 20)]
    good = writers.pcap(recs)
    bad = writers.pcap([(0, b"c" * 20, 20)])[24:]
    bad = bad[:8] + (300_000).to_bytes(4, "little") + bad[12:]
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(good + bad + writers.pcap(recs)[24:])
    reader = open_capture(str(path), compiled=compiled)
    seen = 0
    with pytest.raises(CorruptCaptureError) as info:
        for b in reader:
            seen += len(b)
    assert seen == 2
    assert info.value.offset == len(good)
    assert "captured length 300000" in str(info.value)


def test_caplen_over_snaplen_is_not_corruption(tmp_path: Path) -> None:
    path = tmp_path / "snap.pcap"
    path.write_bytes(writers.pcap([(0, b"x" * 200, 200)], snaplen=96))
    got, reader = read_all(path)
    assert len(got) == 1 and reader.complete  # type: ignore[attr-defined]


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"),
    (b"ab", "only 2 bytes"),
    (b"hello world, not a capture", "not a pcap or pcapng capture (starts with bytes 68 65 6c 6c)"),
    (gzip.compress(b"plain text inside"), "gzip data that is not a pcap"),
    (writers.pcap([])[:10], "pcap file header cut short (10 of 24 bytes)"),
])
def test_not_a_capture(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(NotACaptureError) as info:
        open_capture(str(path))
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_pcapng_bad_block_length_is_corrupt(tmp_path: Path) -> None:
    good = writers.shb() + writers.idb(1) + writers.epb(0, 5, b"x" * 30, 30)
    bad = bytearray(writers.epb(0, 6, b"y" * 30, 30))
    bad[-4:] = (999).to_bytes(4, "little")  # trailer disagrees with the header
    path = tmp_path / "bad.pcapng"
    path.write_bytes(good + bytes(bad))
    reader = open_capture(str(path))
    seen = 0
    with pytest.raises(CorruptCaptureError) as info:
        for b in reader:
            seen += len(b)
    assert seen == 1
    assert info.value.offset == len(good)


def test_pcapng_huge_unknown_block_at_the_end_is_a_cut(tmp_path: Path) -> None:
    good = writers.shb() + writers.idb(1) + writers.epb(0, 5, b"x" * 30, 30)
    huge = (0x0BAD).to_bytes(4, "little") + (0x7FFFFFF0).to_bytes(4, "little") + b"\0" * 40
    path = tmp_path / "huge.pcapng"
    path.write_bytes(good + huge)
    got, reader = read_all(path)
    assert len(got) == 1
    assert reader.complete is False and reader.cut_at == len(good)  # type: ignore[attr-defined]


def test_stdin_is_read_as_a_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recs = [(i * 10**9, b"z" * i, i) for i in range(50)]
    path = tmp_path / "s.pcap"
    path.write_bytes(writers.pcap(recs))
    with open(path, "rb") as fh:
        monkeypatch.setattr("sys.stdin", fh)
        import os

        saved = os.dup(0)
        os.dup2(fh.fileno(), 0)
        try:
            got, reader = read_all(Path("-"))
        finally:
            os.dup2(saved, 0)
            os.close(saved)
    assert [g[1] for g in got] == [r[1] for r in recs]
    assert reader.source.size is None  # type: ignore[attr-defined]
    assert np.all(np.diff([g[0] for g in got]) > 0)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("tail", [5, 0])
def test_skip_damaged_resynchronises_on_the_next_records(tmp_path: Path, compiled: bool,
                                                         tail: int) -> None:
    before = [(i * 10**9, bytes([i]) * 40, 40) for i in range(3)]
    after = [((10 + i) * 10**9, bytes([i]) * 50, 50) for i in range(tail)]
    head = writers.pcap(before)
    garbage = b"\xff" * 37  # a record header claiming 4 GiB, and more junk
    path = tmp_path / "damaged.pcap"
    path.write_bytes(head + garbage + writers.pcap(after)[24:])
    reader = open_capture(str(path), compiled=compiled, skip_damaged=True)
    got = [int(w) for b in reader for w in b.wirelen]
    assert got == [40] * 3 + [50] * tail
    skipped_to = len(path.read_bytes()) if tail == 0 else len(head) + len(garbage)
    assert reader.skipped == [(len(head), skipped_to - len(head))]  # type: ignore[attr-defined]
    assert reader.complete is False


def test_skip_damaged_from_the_command_line(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    before = [(i * 10**9, bytes([i]) * 40, 40) for i in range(3)]
    head = writers.pcap(before)
    path = tmp_path / "damaged.pcap"
    path.write_bytes(head + b"\xff" * 37 + writers.pcap(before)[24:])
    proc = subprocess.run([sys.executable, "-m", "classifier", "analyze", "--format", "json",
                           "--skip-damaged", str(path)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["totals"]["packets"] == 6
    assert doc["anomalies"]["damaged-bytes-skipped"] == 37
    assert f"skipped 37 damaged bytes at byte {len(head)}" in proc.stderr
    plain = subprocess.run([sys.executable, "-m", "classifier", "analyze", "--format", "json",
                            str(path)], capture_output=True, text=True, timeout=120,
                           check=False)
    assert plain.returncode == 1 and json.loads(plain.stdout)["totals"]["packets"] == 3


@pytest.mark.parametrize("compiled", [False, True])
def test_skip_damaged_pcapng_resynchronises_on_the_next_blocks(tmp_path: Path,
                                                               compiled: bool) -> None:
    head = writers.shb() + writers.idb(1)
    good = [writers.epb(0, i, bytes([i]) * 30, 30) for i in range(3)]
    bad = bytearray(writers.epb(0, 9, b"y" * 30, 30))
    bad[-4:] = (999).to_bytes(4, "little")  # trailer disagrees with the header
    after = [writers.epb(0, 20 + i, bytes([i]) * 40, 40) for i in range(12)]
    path = tmp_path / "damaged.pcapng"
    path.write_bytes(head + b"".join(good) + bytes(bad) + b"".join(after))
    reader = open_capture(str(path), compiled=compiled, skip_damaged=True)
    got = [int(w) for b in reader for w in b.wirelen]
    assert got == [30] * 3 + [40] * 12
    at = len(head) + sum(map(len, good))
    assert reader.skipped == [(at, len(bad))]  # type: ignore[attr-defined]
    assert reader.complete is False


# -- pcapng byte ranges ----------------------------------------------------------------


@pytest.mark.parametrize("compiled", [False, True])
def test_pcapng_range_reads_its_blocks_with_the_state_it_is_given(tmp_path: Path,
                                                                  compiled: bool) -> None:
    from classifier.sources.ranges import ByteRange, Interface, SectionState

    t0 = 1_700_000_000 * 10**9
    head = writers.shb() + writers.idb(1, tsresol=6)
    first = writers.epb(0, writers.units_of(t0, 6), b"\x01" * 60, 60)
    # The range: a simple packet block (the previous packet's time), an interface
    # described on the way, and a packet on it.
    spb = writers.spb(b"\x02" * 60)
    idb = writers.idb(101, tsresol=9)
    last = writers.epb(1, t0 + 5, b"\x45" + b"\x00" * 39, 40)
    path = tmp_path / "r.pcapng"
    path.write_bytes(head + first + spb + idb + last)
    start = len(head + first)
    state = SectionState(False, (Interface(1, 0, (False, 6)),), last_ns=t0)
    rng = ByteRange(start, path.stat().st_size, state)
    got, reader = read_all(path, byte_range=rng, compiled=compiled)
    assert got == [(t0, b"\x02" * 60, 60, 1), (t0 + 5, b"\x45" + b"\x00" * 39, 40, 101)]
    assert rng.report.start_state == state
    assert rng.report.depends_on_last_ns  # the simple packet block took state.last_ns
    assert rng.report.end_state == SectionState(
        False, (Interface(1, 0, (False, 6)), Interface(101, 0, (False, 9))), t0 + 5)
    assert reader.complete and reader.position == rng.stop  # type: ignore[attr-defined]

    # The range ends at ``stop`` as at the end of a file: a block across it is a cut.
    cut = ByteRange(start, start + len(spb) + 8, state)
    got, reader = read_all(path, byte_range=cut, compiled=compiled)
    assert [g[1] for g in got] == [b"\x02" * 60]
    assert not reader.complete and reader.position == start + len(spb)  # type: ignore[attr-defined]


def test_pcapng_range_from_mid_file_needs_a_state(tmp_path: Path) -> None:
    path = tmp_path / "r.pcapng"
    path.write_bytes(writers.shb() + writers.idb() + writers.epb(0, 1, b"\0" * 20, 20))
    with pytest.raises(ValueError, match="section state"):
        open_capture(str(path), byte_range=(28, path.stat().st_size))


def _decoded_apart(path: Path, **kw: object) -> int:
    """Check every batch's headers, decoded by the reader as it walked, against the
    decoder run on the same batch afterwards; returns the packets checked."""
    reader = open_capture(str(path), **kw)  # type: ignore[arg-type]
    n = 0
    for b in reader:
        assert b.headers is not None
        apart = decode_batch(dataclasses.replace(b, headers=None),
                             compiled=bool(kw.get("compiled")))
        for field, got, want in zip(dataclasses.fields(Headers), b.headers.as_tuple(),
                                    apart.as_tuple(), strict=True):
            assert got.dtype == want.dtype, field.name
            np.testing.assert_array_equal(got, want, err_msg=field.name)
        n += len(b)
    reader.source.close()
    return n


@st.composite
def two_interface_captures(draw: st.DrawFn) -> tuple[list[int], list[tuple[int, bytes]]]:
    """Two interfaces of drawn link types and (interface, frame) packets; interface
    -1 is a simple packet block (the first interface's link type)."""
    lts = [draw(st.sampled_from(CAPTURE_LINKTYPES)) for _ in range(2)]
    packets = []
    for _ in range(draw(st.integers(1, 24))):
        iface = draw(st.sampled_from([0, 0, 1, 1, -1]))
        packets.append((iface, draw(link_frames(lts[max(iface, 0)]))))
    return lts, packets


@settings(max_examples=80, deadline=None, suppress_health_check=fixture_ok)
@given(capture=captures(), run=st.sampled_from([1, 2, 3, 5]),
       max_packets=st.sampled_from([1, 4, 1000]))
def test_pcap_headers_decoded_on_the_walk_are_the_decoders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capture: tuple[int, list[Record]],
        run: int, max_packets: int) -> None:
    """The pcap walk decodes a run of records at a time (interpreted here, with short
    runs, so that runs end mid-batch and at its end): the same columns as decoding the
    batch apart, packet for packet."""
    monkeypatch.setattr(pcap_source, "DECODE_RUN", run)
    linktype, recs = capture
    path = tmp_path / "x.pcap"
    path.write_bytes(writers.pcap(recs, linktype=linktype))
    assert _decoded_apart(path, compiled=False, max_packets=max_packets) == len(recs)


@settings(max_examples=80, deadline=None, suppress_health_check=fixture_ok)
@given(capture=two_interface_captures(), run=st.sampled_from([1, 2, 3, 5]),
       max_packets=st.sampled_from([1, 4, 1000]))
def test_pcapng_headers_decoded_on_the_walk_are_the_decoders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capture: tuple[list[int], list[tuple[int, bytes]]], run: int, max_packets: int) -> None:
    """As for pcap, with two interfaces of different link types: each packet is
    decoded as its own interface's link type."""
    monkeypatch.setattr(pcapng_source, "DECODE_RUN", run)
    lts, packets = capture
    blob = [writers.shb(), writers.idb(lts[0]), writers.idb(lts[1])]
    for iface, frame in packets:
        blob.append(writers.spb(frame) if iface < 0
                    else writers.epb(iface, 1_000_000, frame, len(frame)))
    path = tmp_path / "x.pcapng"
    path.write_bytes(b"".join(blob))
    got, _ = read_all(path, compiled=False)
    assert [lt for *_, lt in got] == [lts[max(iface, 0)] for iface, _ in packets]
    assert _decoded_apart(path, compiled=False, max_packets=max_packets) == len(packets)


@pytest.mark.parametrize("name", ["office365-mix.pcap", "office365-mix.pcapng",
                                  "multi-section.pcapng", "ethernet-vlan.pcap", "linux-sll.pcap"])
def test_compiled_walks_decode_as_the_decoder_does(name: str) -> None:
    """The compiled walks, with their own run length, on the sample captures (the mix
    holds more packets than one run)."""
    path = Path(__file__).resolve().parent.parent / "pcaps" / name
    assert _decoded_apart(path, compiled=True) > 0
