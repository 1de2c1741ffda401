"""Damaged captures: cut at every byte, and record headers corrupted field by field.

Whatever the damage, the analysis never raises and never hangs; the records before the
damage are reported, every packet counted lands in exactly one category, and the
error or warning names the byte offset where the damage is (README, "Errors and exit
codes"). The sweeps call ``analyze_capture`` with rules compiled once (what
``classifier.analyze`` does for one file, less compiling the rules per call);
``classifier.analyze`` itself and the command line are checked on a sample of cuts.
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import classifier
from classifier.lookup import compile_rules
from classifier.result import AnalysisResult
from classifier.sources import MAX_CAPLEN
from fuzz.checks import check_capture
from fuzz.make_corpus import frames
from tests import writers
from tests.deadline import deadline

RULES = compile_rules(classifier.load_rules())
TS = 1_428_312_600 * 1_000_000_000
#: Values a damaged 32-bit header field takes (``None``: the field's own value +- 1).
HOSTILE = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, MAX_CAPLEN, MAX_CAPLEN + 1)
#: Seconds one damaged capture may take before it counts as a hang.
DEADLINE = 20


def _records() -> list[writers.Record]:
    """Eight small frames: TCP and UDP over IPv4 and IPv6, both fragments of a datagram,
    a VLAN stack, ARP; one wire length longer than captured (an FCS not kept)."""
    chosen = [frames()[i] for i in (0, 1, 2, 4, 5, 6, 11, 3)]
    return [(TS + i * 1_000_000, d, len(d) + (4 if i == 5 else 0)) for i, d in enumerate(chosen)]


RECORDS = _records()
N = len(RECORDS)
MIDDLE = N // 2


@dataclass(frozen=True)
class Layout:
    """A capture's bytes, where its packet records start and end, and where the
    reading of a prefix may stop cleanly."""

    data: bytes
    header: int  # bytes before the first packet record (file header, SHB, IDB)
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    boundaries: frozenset[int]  # offsets where a cut leaves only whole blocks
    unreadable_below: int  # a cut shorter than this is not a capture at all


def pcap_layout() -> Layout:
    data = writers.pcap(RECORDS)
    starts, ends, pos = [], [], 24
    for _, d, _ in RECORDS:
        starts.append(pos)
        pos += 16 + len(d)
        ends.append(pos)
    return Layout(data, 24, tuple(starts), tuple(ends), frozenset([24, *ends]), 24)


def pcapng_layout() -> Layout:
    shb, idb = writers.shb(), writers.idb(1)
    blocks = [writers.epb(0, writers.units_of(ts, 6), d, orig) for ts, d, orig in RECORDS]
    starts, ends, pos = [], [], len(shb) + len(idb)
    for b in blocks:
        starts.append(pos)
        pos += len(b)
        ends.append(pos)
    bounds = frozenset([len(shb), len(shb) + len(idb), *ends])
    return Layout(shb + idb + b"".join(blocks), len(shb) + len(idb), tuple(starts),
                  tuple(ends), bounds, 28)


LAYOUTS = {"pcap": pcap_layout, "pcapng": pcapng_layout}


def analyze(path: Path) -> dict[str, Any]:
    return analyze_result(path).to_dict()


def analyze_result(path: Path) -> AnalysisResult:
    with deadline(DEADLINE):
        return classifier.analyze_capture(str(path), RULES)


def assert_sums(doc: dict[str, Any]) -> None:
    cats = doc["categories"].values()
    assert sum(c["packets"] for c in cats) == doc["totals"]["packets"]
    assert sum(c["bytes"] for c in cats) == doc["totals"]["bytes"]
    assert all(c["packets"] >= 0 and c["bytes"] >= 0 for c in cats)
    assert doc["captures"][0]["packets"] == doc["totals"]["packets"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "classifier", "analyze", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def stderr_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.strip()]


# ---- (a) cut at every byte offset ----------------------------------------------------


def expected_cut(layout: Layout, cut: int) -> tuple[int, int | None]:
    """(complete records before ``cut``, offset a cut warning must name or None)."""
    whole = sum(1 for e in layout.ends if e <= cut)
    if cut in layout.boundaries:
        return whole, None
    before = [b for b in layout.boundaries if b <= cut]
    return whole, max(before) if before else 0


@pytest.mark.parametrize("fmt", sorted(LAYOUTS))
def test_cut_at_every_byte(fmt: str, tmp_path: Path) -> None:
    layout = LAYOUTS[fmt]()
    full = analyze(_write(tmp_path / f"full.{fmt}", layout.data))
    assert full["totals"]["packets"] == N and full["captures"][0]["complete"]
    # The categories of every whole-record prefix: a cut must report exactly those.
    prefix = {k: analyze(_write(tmp_path / f"p{k}.{fmt}",
                                layout.data[: layout.ends[k - 1] if k else layout.header]))
              for k in range(N + 1)}
    path = tmp_path / f"cut.{fmt}"
    failures: list[str] = []
    for cut in range(len(layout.data) + 1):
        result = analyze_result(_write(path, layout.data[:cut]))
        doc = result.to_dict()
        summary = doc["captures"][0]
        warnings = result.captures[0].warnings
        try:
            assert_sums(doc)
            if cut < layout.unreadable_below:
                assert summary["packets"] == 0 and not summary["complete"]
                assert summary["error"] and str(path) in summary["error"]
                assert warnings == []
                continue
            whole, offset = expected_cut(layout, cut)
            assert summary["packets"] == whole
            assert doc["categories"] == prefix[whole]["categories"]
            assert summary["error"] is None
            assert summary["complete"] is (offset is None)
            if offset is None:
                assert warnings == []
            else:  # one warning, naming the start of the incomplete record
                assert len(warnings) == 1 and f"at byte {offset};" in warnings[0]
        except AssertionError as exc:
            failures.append(f"cut at {cut}: {exc!r}: {summary} {warnings}")
    assert not failures, "\n".join(failures[:5])


def test_the_public_analyze_agrees_on_a_sample_of_cuts(tmp_path: Path) -> None:
    for fmt, make in LAYOUTS.items():
        layout = make()
        path = tmp_path / f"s.{fmt}"
        sample = sorted({c for b in layout.boundaries for c in (b - 1, b, b + 1)
                         if 0 <= c <= len(layout.data)} | {0, 3, 10})
        for cut in sample:
            _write(path, layout.data[:cut])
            with deadline(DEADLINE):
                public = classifier.analyze(str(path)).to_dict()
            assert public == analyze(path), (fmt, cut)


@pytest.mark.parametrize("fmt", sorted(LAYOUTS))
def test_cli_exit_codes_and_one_line_per_damage(fmt: str, tmp_path: Path) -> None:
    layout = pcap_layout() if fmt == "pcap" else pcapng_layout()
    path = tmp_path / f"x.{fmt}"
    mid = layout.starts[MIDDLE] + 10
    # A cut mid-record: exit 0, one warning naming the incomplete record's offset.
    proc = cli("--format", "json", str(_write(path, layout.data[:mid])))
    assert proc.returncode == 0, proc.stderr
    lines = stderr_lines(proc)
    assert len(lines) == 1 and ": warning: " in lines[0], lines
    assert f"at byte {layout.starts[MIDDLE]}" in lines[0] and str(path) in lines[0]
    doc = json.loads(proc.stdout)
    assert doc["captures"][0]["packets"] == MIDDLE and not doc["captures"][0]["complete"]
    # A cut on a record boundary: a complete capture, nothing on stderr.
    proc = cli("--format", "json", str(_write(path, layout.data[: layout.ends[MIDDLE]])))
    assert proc.returncode == 0 and stderr_lines(proc) == []
    assert json.loads(proc.stdout)["captures"][0]["packets"] == MIDDLE + 1
    # Cut inside the file header (or empty): not a capture, exit 2, one error line.
    for cut in (0, 3, layout.unreadable_below - 1):
        proc = cli(str(_write(path, layout.data[:cut])))
        assert proc.returncode == 2, (cut, proc.stderr)
        lines = stderr_lines(proc)
        assert len(lines) == 1 and ": error: " in lines[0] and str(path) in lines[0], lines


def test_cli_corrupt_record_header_exits_1(tmp_path: Path) -> None:
    for fmt, field, value in (("pcap", 8, MAX_CAPLEN + 1), ("pcapng", 4, 0xFFFFFFFF)):
        layout = LAYOUTS[fmt]()
        at = layout.starts[MIDDLE]
        path = _write(tmp_path / f"bad.{fmt}", _patch(layout.data, at + field, value))
        proc = cli("--format", "json", str(path))
        assert proc.returncode == 1, proc.stderr
        lines = stderr_lines(proc)
        assert len(lines) == 1 and ": error: " in lines[0], lines
        assert f"{path} at byte {at}:" in lines[0]
        doc = json.loads(proc.stdout)
        assert doc["captures"][0]["packets"] == MIDDLE and not doc["captures"][0]["complete"]


# ---- (b) one header field of a middle record, corrupted ------------------------------


@dataclass(frozen=True)
class Walk:
    """What reading a pcap must give: packets, wire bytes, status, and the offset of
    the damage."""

    packets: int
    bytes: int
    status: str
    offset: int | None


def reference_pcap(data: bytes) -> Walk:
    """The pcap record walk as the README states it. A record claiming more than
    256 KiB is corrupt; one that does not fit in what is left of the file is a cut."""
    pos, packets, nbytes = 24, 0, 0
    status, offset = "ok", None
    while pos < len(data):
        if pos + 16 > len(data):
            status, offset = "cut", pos
            break
        incl, orig = struct.unpack_from("<II", data, pos + 8)
        if incl > MAX_CAPLEN:
            status, offset = "corrupt", pos
            break
        if pos + 16 + incl > len(data):
            status, offset = "cut", pos
            break
        packets, nbytes, pos = packets + 1, nbytes + orig, pos + 16 + incl
    return Walk(packets, nbytes, status, offset)


PCAP_FIELDS = {"ts_sec": 0, "ts_frac": 4, "incl_len": 8, "orig_len": 12}
PCAPNG_FIELDS = {"block_type": 0, "block_length": 4, "trailer_length": -4,
                 "interface_id": 8, "captured_length": 20}
def _field_values(original: int) -> list[int]:
    values = [*HOSTILE, original - 1, original + 1, original + 4]
    return sorted({v & 0xFFFFFFFF for v in values} - {original})


def _pcap_cases() -> Iterator[Any]:
    layout = pcap_layout()
    at = layout.starts[MIDDLE]
    for name, off in PCAP_FIELDS.items():
        (original,) = struct.unpack_from("<I", layout.data, at + off)
        for value in _field_values(original):
            yield pytest.param(name, value, id=f"{name}={value:#x}")


def _pcapng_cases() -> Iterator[Any]:
    layout = pcapng_layout()
    at, end = layout.starts[MIDDLE], layout.ends[MIDDLE]
    for name, off in PCAPNG_FIELDS.items():
        (original,) = struct.unpack_from("<I", layout.data, (end if off < 0 else at) + off)
        values = _field_values(original)
        if name == "block_type":
            values += [1, 2, 3, 0x0A0D0D0A]
        for value in sorted(set(values) - {original}):
            yield pytest.param(name, value, id=f"{name}={value:#x}")


def _patch(data: bytes, at: int, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<I", out, at, value)
    return bytes(out)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _check_damaged(path: Path) -> tuple[dict[str, Any], list[str]]:
    """Through the public entry point and through every oracle of fuzz/checks.py: the
    JSON document and the warnings."""
    with deadline(DEADLINE):
        doc: dict[str, Any] = classifier.analyze(str(path)).to_dict()
        result = check_capture(str(path), RULES)
    assert result.to_dict() == doc
    assert_sums(doc)
    return doc, result.captures[0].warnings


def _damage_offset(doc: dict[str, Any]) -> int | None:
    summary = doc["captures"][0]
    if summary["error"] is None:
        return None
    text = summary["error"]
    assert text.count("\n") == 0 and text.startswith(doc["captures"][0]["path"])
    return int(text.split(" at byte ", 1)[1].split(":", 1)[0])


@pytest.mark.parametrize(("field", "value"), list(_pcap_cases()))
def test_pcap_damaged_record_header(field: str, value: int, tmp_path: Path) -> None:
    layout = pcap_layout()
    at = layout.starts[MIDDLE]
    data = _patch(layout.data, at + PCAP_FIELDS[field], value)
    doc, warnings = _check_damaged(_write(tmp_path / "damaged.pcap", data))
    summary = doc["captures"][0]
    want = reference_pcap(data)
    assert (summary["packets"], summary["bytes"]) == (want.packets, want.bytes)
    assert summary["packets"] >= MIDDLE  # the records before the damage
    assert summary["complete"] is (want.status == "ok")
    if want.status == "corrupt":
        assert _damage_offset(doc) == want.offset
    else:
        assert summary["error"] is None
    if want.status == "cut":
        assert len(warnings) == 1 and f"at byte {want.offset};" in warnings[0]
    if field in ("ts_sec", "ts_frac", "orig_len"):
        assert summary["packets"] == N and summary["complete"]


@pytest.mark.parametrize(("field", "value"), list(_pcapng_cases()))
def test_pcapng_damaged_block_header(field: str, value: int, tmp_path: Path) -> None:
    layout = pcapng_layout()
    at, end = layout.starts[MIDDLE], layout.ends[MIDDLE]
    off = PCAPNG_FIELDS[field]
    data = _patch(layout.data, (end if off < 0 else at) + off, value)
    doc, warnings = _check_damaged(_write(tmp_path / "damaged.pcapng", data))
    summary = doc["captures"][0]
    blen = end - at
    assert summary["packets"] >= MIDDLE  # the records before the damage
    stopped = (summary["packets"] == MIDDLE and not summary["complete"]
               and (_damage_offset(doc) == at or any(f"at byte {at};" in w for w in warnings)))
    if field in ("block_length", "trailer_length"):
        assert stopped, summary
    elif field == "interface_id":
        assert (summary["packets"] == N and summary["complete"]) if value == 0 else stopped
    elif field == "captured_length":
        assert (summary["packets"] == N and summary["complete"]) if value <= blen - 32 \
            else stopped
    elif value in (2, 3, 6):  # another packet block type: still a packet
        assert summary["packets"] == N and summary["complete"]
    elif value == 0x0A0D0D0A:  # a section header that is not one
        assert stopped and summary["error"] is not None
    else:  # an unknown block (or an interface description) is skipped whole
        assert summary["packets"] == N - 1 and summary["complete"], summary


# ---- gzip: a cut or damaged compressed capture ---------------------------------------

def _records_in(data: bytes) -> int:
    """Whole pcap records in a decompressed prefix."""
    pos, n = 24, 0
    while pos + 16 <= len(data):
        (incl,) = struct.unpack_from("<I", data, pos + 8)
        if pos + 16 + incl > len(data):
            break
        pos, n = pos + 16 + incl, n + 1
    return n


def test_cut_gzip_keeps_the_records_before_the_cut(tmp_path: Path) -> None:
    data = gzip.compress(pcap_layout().data, mtime=0)
    path = tmp_path / "cut.pcap.gz"
    failures = []
    for cut in range(10, len(data) - 8):
        prefix = zlib.decompressobj(wbits=31).decompress(data[:cut])
        doc = analyze(_write(path, data[:cut]))
        assert_sums(doc)
        if len(prefix) < 24:
            continue
        summary = doc["captures"][0]
        if summary["packets"] != _records_in(prefix) or summary["complete"]:
            failures.append(f"cut at {cut}: {summary}")
    assert not failures, f"{len(failures)} cuts, e.g. " + "\n".join(failures[:3])


@pytest.mark.parametrize("damage", ["crc", "trailing-garbage"])
def test_damaged_gzip_trailer_keeps_every_record(damage: str, tmp_path: Path) -> None:
    data = bytearray(gzip.compress(pcap_layout().data, mtime=0))
    if damage == "crc":
        data[-6] ^= 0xFF
    else:
        data += b"not gzip"
    doc = analyze(_write(tmp_path / "damaged.pcap.gz", bytes(data)))
    assert_sums(doc)
    assert doc["captures"][0]["packets"] == N
