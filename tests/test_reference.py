"""The fast path counts every capture as the per-packet reference decoder does.

``benchmarks/peers/dpkt_loop.py`` reads each record with dpkt and walks its headers in
plain Python, one packet at a time; the fast path decodes whole batches with the
``classifier.decode`` kernel, compiled or interpreted. Both must give the same totals
and the same packets and wire bytes in every category: on the sample captures, on
every capture of the shared corpus, and on random captures.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

import classifier
from benchmarks.peers import dpkt_loop
from classifier.lookup import CompiledRules, compile_rules
from classifier.rules import RuleSet, load_rules
from tests import writers
from tests.conftest import CORPUS, PCAPS
from tests.strategies import captures

#: Sample captures that hold no capture at all: neither side counts anything in them
#: (checked by ``test_neither_reads_a_non_capture``).
NOT_CAPTURES = {
    "not-a-capture.pcap": "a text file, not a capture",
    "empty.pcap": "an empty file",
}
#: Sample captures damaged part way: both sides count the records before the damage and
#: say that the capture is incomplete.
DAMAGED = {"truncated.pcap", "corrupt-record.pcap"}
#: Files of the sample folder that are not captures.
SAMPLE_OTHER_FILES = {"README.md", "make_samples.py", "expected.json"}

#: Corpus files left out of the comparison, with the reason. None: every file of the
#: corpus is compared (an empty or unreadable one must be rejected by both sides).
CORPUS_EXCLUDED: dict[str, str] = {}
#: Files of the corpus that are not captures.
CORPUS_OTHER_SUFFIXES = {".md"}

MODES = [pytest.param(True, id="compiled"), pytest.param(False, id="interpreted")]


def _sample_names() -> list[str]:
    return sorted(p.name for p in PCAPS.iterdir()
                  if p.is_file() and p.name not in SAMPLE_OTHER_FILES | set(NOT_CAPTURES))


def _corpus_names() -> list[str]:
    """Corpus captures relative to the corpus folder; a placeholder when the folder is
    absent, so that the test is collected and skips with the fixture's reason."""
    if not CORPUS.is_dir():
        return ["(corpus absent)"]
    return sorted(
        p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*")
        if p.is_file() and p.suffix not in CORPUS_OTHER_SUFFIXES
        and p.relative_to(CORPUS).as_posix() not in CORPUS_EXCLUDED
    )


SAMPLES = _sample_names()
CORPUS_FILES = _corpus_names()


@cache
def _rules() -> tuple[RuleSet, CompiledRules]:
    rules = load_rules()
    return rules, compile_rules(rules)


@cache
def _reference(path: str) -> dpkt_loop.Result:
    return dpkt_loop.count_file(path, _rules()[0])


def _fast(path: str, compiled: bool) -> classifier.AnalysisResult:
    return classifier.analyze_capture(path, _rules()[1], compiled=compiled)


def _counts(doc: dict[str, Any]) -> dict[str, Any]:
    return {"totals": doc["totals"], "categories": doc["categories"]}


def _differences(fast: dict[str, Any], ref: dict[str, Any]) -> str:
    """The totals and categories where the two disagree, one a line."""
    lines = []
    if fast["totals"] != ref["totals"]:
        lines.append(f"totals: fast {fast['totals']} reference {ref['totals']}")
    if list(fast["categories"]) != list(ref["categories"]):
        lines.append(f"categories: fast {list(fast['categories'])} "
                     f"reference {list(ref['categories'])}")
    for cat in fast["categories"]:
        a, b = fast["categories"][cat], ref["categories"].get(cat)
        if a != b:
            lines.append(f"{cat}: fast {a} reference {b}")
    return "\n".join(lines)


def _assert_same(path: Path, compiled: bool) -> tuple[classifier.AnalysisResult,
                                                      dpkt_loop.Result]:
    """Both sides on ``path``: same totals, same packets and bytes per category."""
    ref = _reference(str(path))
    fast = _fast(str(path), compiled)
    fast_counts, ref_counts = _counts(fast.to_dict()), _counts(ref.as_dict())
    assert fast_counts == ref_counts, f"{path}:\n{_differences(fast_counts, ref_counts)}"
    return fast, ref


@pytest.mark.parametrize("compiled", MODES)
@pytest.mark.parametrize("name", SAMPLES)
def test_samples_agree(name: str, compiled: bool, pcaps_dir: Path) -> None:
    fast, ref = _assert_same(pcaps_dir / name, compiled)
    summary = fast.captures[0]
    assert summary.error is None or name in DAMAGED, summary.error
    if name in DAMAGED:
        # Counted up to the damage, and flagged as incomplete by both.
        assert ref.packets > 0
        assert not summary.complete
        assert ref.incomplete, ref.problem
    else:
        assert summary.complete
        assert not ref.incomplete, ref.problem


@pytest.mark.parametrize("compiled", MODES)
@pytest.mark.parametrize("name", sorted(NOT_CAPTURES))
def test_neither_reads_a_non_capture(name: str, compiled: bool, pcaps_dir: Path) -> None:
    path = str(pcaps_dir / name)
    with pytest.raises(ValueError, match="not a pcap or pcapng file"):
        dpkt_loop.count_file(path, _rules()[0])
    fast = _fast(path, compiled)
    assert fast.captures[0].status == "unreadable"
    assert fast.to_dict()["totals"] == {"packets": 0, "bytes": 0}


@pytest.mark.corpus
@pytest.mark.parametrize("compiled", MODES)
@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_agrees(name: str, compiled: bool, corpus_dir: Path) -> None:
    path = corpus_dir / name
    try:
        _reference(str(path))
    except ValueError:
        # Not a capture (the corpus holds one empty file): the fast path rejects it too.
        fast = _fast(str(path), compiled)
        assert fast.captures[0].status == "unreadable", fast.captures[0].status
        assert fast.to_dict()["totals"] == {"packets": 0, "bytes": 0}
        return
    fast, ref = _assert_same(path, compiled)
    # Both stop at the same damage, if any.
    assert fast.captures[0].complete == (not ref.incomplete), (fast.captures[0].error,
                                                               ref.problem)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reference")


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(capture=captures())
def test_random_captures_agree(capture: tuple[int, list[tuple[int, bytes, int]]],
                               scratch: Path) -> None:
    """Ethernet (VLAN, FabricPath, MPLS, PPPoE), Linux cooked, raw IP, BSD null and
    loop, PPP and Cisco HDLC frames of IPv4/IPv6 TCP/UDP packets, cut at random."""
    linktype, records = capture
    path = scratch / "random.pcap"
    path.write_bytes(writers.pcap(records, linktype=linktype))
    ref = _counts(dpkt_loop.count_file(str(path), _rules()[0]).as_dict())
    for compiled in (True, False):
        fast = _counts(_fast(str(path), compiled).to_dict())
        assert fast == ref, (f"link type {linktype}, compiled={compiled}:\n"
                             f"{_differences(fast, ref)}")
