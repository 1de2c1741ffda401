"""Agreement with tshark, an independent decoder: per capture, the packets and the sum
of wire lengths; per category, the default rules evaluated on tshark's dissection."""

from __future__ import annotations

from pathlib import Path

import pytest

import classifier
from tests import tshark_eval
from tests.conftest import CORPUS, PCAPS

pytestmark = pytest.mark.skipif(not tshark_eval.available(), reason="tshark not installed")

#: Captures where tshark's answer differs from the capture's own records, and why.
TOTALS_EXCLUDED = {
    # A fuzzed record declares an original length of 4,093,509,168 bytes; tshark caps
    # frame.len at 2**31 - 1, we count what the record says.
    "fuzz-2021-06-07-c6c72a0a56.pcap": "tshark caps frame.len at 2**31-1",
}


def _captures(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in
                  {".pcap", ".pcapng", ".cap", ".gz"} and p.stat().st_size > 0)


CORPUS_FILES = _captures(CORPUS)
SAMPLE_FILES = [p for p in _captures(PCAPS)
                if p.name not in {"not-a-capture.pcap", "empty.pcap"}]


def _ids(paths: list[Path]) -> list[str]:
    return [f"{p.parent.name}/{p.name}" for p in paths]


def _ours(path: Path) -> dict[str, tuple[int, int]]:
    doc = classifier.analyze(str(path)).to_dict()
    return {c: (v["packets"], v["bytes"]) for c, v in doc["categories"].items()}


@pytest.mark.corpus
@pytest.mark.parametrize("path", CORPUS_FILES, ids=_ids(CORPUS_FILES))
def test_corpus_agrees_with_tshark(path: Path, corpus_dir: Path) -> None:
    """Totals (packets, sum of frame lengths) and the per-category evaluation."""
    if path.name in TOTALS_EXCLUDED:
        pytest.skip(TOTALS_EXCLUDED[path.name])
    result = classifier.analyze(str(path))
    assert (result.totals.packets, result.totals.bytes) == tshark_eval.totals(str(path))
    ours = {c: (t.packets, t.bytes) for c, t in result.categories.items()}
    assert ours == tshark_eval.categories(str(path), classifier.load_rules())


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=_ids(SAMPLE_FILES))
def test_sample_categories_equal_tshark_evaluation(path: Path) -> None:
    assert _ours(path) == tshark_eval.categories(str(path), classifier.load_rules())


def test_the_corpus_is_not_silently_empty(corpus_dir: Path) -> None:
    assert len(CORPUS_FILES) > 100
