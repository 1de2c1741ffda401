"""The sample captures in ``pcaps/``: what the analyzer reports for each must be what
``pcaps/make_samples.py`` put in it (``pcaps/expected.json``), whatever the link type,
encapsulation, file format or damage."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import classifier
from classifier.lookup import compile_rules

PCAPS = Path(__file__).resolve().parent.parent / "pcaps"
EXPECTED: dict[str, dict[str, Any]] = json.loads(
    (PCAPS / "expected.json").read_text(encoding="utf-8")
)
NAMES = sorted(EXPECTED)
READABLE = [n for n in NAMES if EXPECTED[n]["exit"] != 2]
DAMAGED = [n for n in NAMES if EXPECTED[n]["exit"] != 0 or not EXPECTED[n]["complete"]]
INTACT = [n for n in NAMES if EXPECTED[n]["exit"] == 0 and EXPECTED[n]["complete"]]

#: The anomaly kinds the samples are built to contain; for these the count must be exact
#: (zero where the sample has none). Other kinds the analyzer reports are not checked.
CONSTRUCTED_ANOMALIES = (
    "fragment-without-first",
    "ip-header-cut",
    "ports-not-captured",
    "unknown-link-type",
)

#: One capture written as every variant the analyzer must read alike.
MIX_VARIANTS = [
    "office365-mix.pcap",
    "office365-mix-ns.pcap",
    "office365-mix-be.pcap",
    "office365-mix.pcapng",
    "office365-mix.pcap.gz",
    "office365-mix.pcapng.gz",
]

#: Files in pcaps/ that make_samples.py does not write.
NOT_GENERATED = {"make_samples.py", "README.md"}


def run_cli(*args: str, stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "classifier", "analyze", "--format", "json", *args]
    if stdin is None:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    with stdin.open("rb") as fh:
        proc = subprocess.run(cmd, stdin=fh, capture_output=True, timeout=300, check=False)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def without_captures(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "captures"}


def check_counts(doc: dict[str, Any], expected: dict[str, Any]) -> None:
    assert doc["totals"] == {"packets": expected["packets"], "bytes": expected["bytes"]}
    # Every category of the rule set in order, then other and non-ip, zeros included.
    assert list(doc["categories"]) == list(expected["categories"])
    assert doc["categories"] == expected["categories"]
    anomalies = doc["anomalies"]
    for kind in CONSTRUCTED_ANOMALIES:
        assert anomalies.get(kind, 0) == expected["anomalies"].get(kind, 0), kind
    assert set(expected["anomalies"]) <= set(anomalies)


def stderr_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def test_expected_lists_every_category() -> None:
    categories = list(classifier.load_rules().categories)
    for name, expected in EXPECTED.items():
        assert list(expected["categories"]) == categories, name
        assert sum(c["packets"] for c in expected["categories"].values()) == expected["packets"]
        assert sum(c["bytes"] for c in expected["categories"].values()) == expected["bytes"]


@pytest.mark.parametrize("name", NAMES)
def test_analyze(name: str, pcaps_dir: Path) -> None:
    expected = EXPECTED[name]
    path = str(pcaps_dir / name)
    result = classifier.analyze([path])
    doc = result.to_dict()
    assert doc["schema"] == 2
    assert doc["rules"] == "office365-2015"
    check_counts(doc, expected)
    assert result.exit_code == expected["exit"]
    [capture] = doc["captures"]
    assert capture["path"] == path
    assert capture["packets"] == expected["packets"]
    assert capture["bytes"] == expected["bytes"]
    assert capture["complete"] is expected["complete"]
    if expected["exit"] == 0:
        assert capture["error"] is None
    else:
        assert capture["error"]
        if "offset" in expected:
            assert f"byte {expected['offset']}" in capture["error"]
    if expected["exit"] != 2:
        assert sorted(capture["link_types"]) == sorted(expected["link_types"])
        assert capture["format"].removesuffix(".gz") == expected["format"]
        assert (capture["format"].endswith(".gz")) is name.endswith(".gz")


@pytest.mark.parametrize("name", READABLE)
def test_analyze_compiled(name: str, pcaps_dir: Path) -> None:
    """The samples are small enough to run interpreted by default; the compiled kernels
    must count the same."""
    expected = EXPECTED[name]
    compiled_rules = compile_rules(classifier.load_rules())
    result = classifier.analyze_capture(str(pcaps_dir / name), compiled_rules, compiled=True)
    check_counts(result.to_dict(), expected)
    assert result.exit_code == expected["exit"]


@pytest.mark.parametrize("name", DAMAGED)
def test_cli_damaged(name: str, pcaps_dir: Path) -> None:
    expected = EXPECTED[name]
    path = pcaps_dir / name
    proc = run_cli(str(path))
    assert proc.returncode == expected["exit"], proc.stderr
    assert "Traceback" not in proc.stderr
    lines = stderr_lines(proc)
    if expected["exit"] == 2:
        # One line naming the file; nothing else.
        assert len(lines) == 1, lines
        assert str(path) in lines[0]
        return
    # Cut or corrupt: the records before the damage are reported, and the damage is
    # named with the file and its byte offset.
    naming = [line for line in lines if str(path) in line and str(expected["offset"]) in line]
    assert naming, lines
    if expected["exit"] == 0:
        assert any("warning" in line for line in naming), lines
    check_counts(json.loads(proc.stdout), expected)


def test_cli_mix(pcaps_dir: Path) -> None:
    """The README's main command."""
    name = "office365-mix.pcap"
    proc = run_cli(str(pcaps_dir / name))
    assert proc.returncode == 0, proc.stderr
    assert stderr_lines(proc) == []
    doc = json.loads(proc.stdout)
    check_counts(doc, EXPECTED[name])
    assert doc == classifier.analyze([str(pcaps_dir / name)]).to_dict()


def test_every_format_gives_the_same_result(pcaps_dir: Path) -> None:
    docs = {
        n: without_captures(classifier.analyze([str(pcaps_dir / n)]).to_dict())
        for n in MIX_VARIANTS
    }
    reference = docs[MIX_VARIANTS[0]]
    check_counts(reference, EXPECTED[MIX_VARIANTS[0]])
    for name, doc in docs.items():
        assert doc == reference, name


@pytest.mark.parametrize("jobs", [1, 2])
def test_many_captures_add_up(jobs: int, pcaps_dir: Path) -> None:
    """Several captures in one run: the sums of their counts; the worst exit code."""
    names = [n for n in NAMES if EXPECTED[n]["exit"] != 2]
    result = classifier.analyze([str(pcaps_dir / n) for n in names], jobs=jobs)
    doc = result.to_dict()
    assert [c["path"] for c in doc["captures"]] == [str(pcaps_dir / n) for n in names]
    assert doc["totals"] == {
        "packets": sum(EXPECTED[n]["packets"] for n in names),
        "bytes": sum(EXPECTED[n]["bytes"] for n in names),
    }
    for category, totals in doc["categories"].items():
        for key in ("packets", "bytes"):
            assert totals[key] == sum(EXPECTED[n]["categories"][category][key] for n in names)
    for kind in CONSTRUCTED_ANOMALIES:
        assert doc["anomalies"].get(kind, 0) == sum(
            EXPECTED[n]["anomalies"].get(kind, 0) for n in names
        ), kind
    assert result.exit_code == max(EXPECTED[n]["exit"] for n in names)


@pytest.mark.parametrize("name", ["office365-mix.pcap", "office365-mix.pcapng.gz"])
def test_stdin_gives_the_same_result(name: str, pcaps_dir: Path) -> None:
    proc = run_cli("-", stdin=pcaps_dir / name)
    assert proc.returncode == 0, proc.stderr
    reference = classifier.analyze([str(pcaps_dir / "office365-mix.pcap")]).to_dict()
    assert without_captures(json.loads(proc.stdout)) == without_captures(reference)


def test_samples_match_the_generator(pcaps_dir: Path, tmp_path: Path) -> None:
    """The files on disk are exactly what make_samples.py writes now."""
    proc = subprocess.run(
        [sys.executable, str(pcaps_dir / "make_samples.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    made = {p.name for p in tmp_path.iterdir()}
    assert made == {*EXPECTED, "expected.json"}
    on_disk = {p.name for p in pcaps_dir.iterdir() if p.is_file()} - NOT_GENERATED
    assert on_disk == made
    for name in sorted(made):
        new, old = (tmp_path / name).read_bytes(), (pcaps_dir / name).read_bytes()
        if name.endswith(".gz"):
            # Compare what is compressed: another zlib may compress the same bytes
            # differently.
            assert old[:2] == b"\x1f\x8b", name
            assert gzip.decompress(new) == gzip.decompress(old), name
        else:
            assert new == old, f"{name} differs from what make_samples.py writes"


def test_samples_are_small(pcaps_dir: Path) -> None:
    sizes = {n: (pcaps_dir / n).stat().st_size for n in NAMES}
    assert all(size <= 128 * 1024 for size in sizes.values()), sizes
    assert sum(sizes.values()) < 2 * 1024 * 1024


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not on PATH")
@pytest.mark.parametrize("name", [n for n in READABLE if n in INTACT or n == "truncated.pcap"])
def test_tshark_reads_the_same_packets(name: str, pcaps_dir: Path) -> None:
    """An independent reader sees the same records and wire lengths."""
    proc = subprocess.run(
        ["tshark", "-n", "-r", str(pcaps_dir / name), "-T", "fields", "-e", "frame.len"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lengths = [int(x) for x in proc.stdout.split()]
    expected = EXPECTED[name]
    assert len(lengths) == expected["packets"], proc.stderr
    assert sum(lengths) == expected["bytes"]
    if expected["complete"]:
        assert proc.returncode == 0, proc.stderr
