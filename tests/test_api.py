"""The public Python API."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

import classifier
from classifier.lookup import compile_rules


def test_public_names_are_pinned() -> None:
    assert sorted(classifier.__all__) == sorted([
        "AnalysisResult", "CaptureError", "CaptureSummary", "CorruptCaptureError",
        "NotACaptureError", "O365TrafficError", "Rule", "RuleSet", "RulesError", "Totals",
        "__version__", "analyze", "analyze_capture", "expand_paths", "load_rules",
    ])
    for name in classifier.__all__:
        assert hasattr(classifier, name)


def test_analyze_returns_categories_totals_and_a_dict(pcaps_dir: Path) -> None:
    rules = classifier.load_rules()
    result = classifier.analyze([str(pcaps_dir / "office365-mix.pcap")], rules=rules)
    assert list(result.categories) == list(rules.categories)
    assert result.totals.packets == sum(t.packets for t in result.categories.values())
    doc = result.to_dict()
    assert doc["totals"] == {"packets": result.totals.packets, "bytes": result.totals.bytes}
    assert result.exit_code == 0


def test_results_merge_exactly(pcaps_dir: Path) -> None:
    a = classifier.analyze(str(pcaps_dir / "office365-mix.pcap"))
    b = classifier.analyze(str(pcaps_dir / "ipv6.pcap"))
    both = classifier.analyze([str(pcaps_dir / "office365-mix.pcap"), str(pcaps_dir / "ipv6.pcap")])
    merged = a + b
    assert merged.to_dict() == both.to_dict()
    assert (b + a).to_dict()["categories"] == both.to_dict()["categories"]


def test_errors_form_a_hierarchy() -> None:
    assert issubclass(classifier.NotACaptureError, classifier.CaptureError)
    assert issubclass(classifier.CorruptCaptureError, classifier.CaptureError)
    assert issubclass(classifier.CaptureError, classifier.O365TrafficError)
    assert issubclass(classifier.RulesError, classifier.O365TrafficError)
    err = classifier.CorruptCaptureError("x.pcap", "bad record", 1234)
    assert str(err) == "x.pcap at byte 1234: bad record" and err.offset == 1234


def test_results_do_not_depend_on_batch_size(pcaps_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """One packet per batch: a later fragment whose first fragment came in an earlier
    batch (or comes in a later one) still takes its datagram's category."""
    import classifier.pipeline as pipeline
    from classifier.sources import open_capture

    paths = [str(pcaps_dir / n) for n in ("ipv4.pcap", "ipv6.pcap", "office365-mix.pcap")]
    expected = [classifier.analyze(p).to_dict() for p in paths]
    monkeypatch.setattr(pipeline, "open_capture",
                        functools.partial(open_capture, max_packets=1))
    for path, want in zip(paths, expected, strict=True):
        for compiled in (False, True):
            rules = classifier.load_rules()
            got = classifier.analyze_capture(path, compile_rules(rules), compiled=compiled)
            assert got.to_dict() == want


@pytest.mark.parametrize("max_packets", [1, 5, 64])
def test_details_do_not_depend_on_batch_size_or_the_compiler(
        pcaps_dir: Path, monkeypatch: pytest.MonkeyPatch, max_packets: int) -> None:
    """Directions, QoS, the series and flow records: compiled (one pass, held-back
    fragments passed over in place) and interpreted (numpy, held-back fragments
    copied out) agree, whatever the batches, with fragments held across batches."""
    import classifier.pipeline as pipeline
    from classifier.pipeline import Options
    from classifier.sources import open_capture

    paths = [str(pcaps_dir / n) for n in ("ipv4.pcap", "ipv6.pcap", "office365-mix.pcap")]
    options = Options(interval_ns=100_000_000)
    expected = [classifier.analyze(p, options=options).to_dict() for p in paths]
    monkeypatch.setattr(pipeline, "open_capture",
                        functools.partial(open_capture, max_packets=max_packets))
    for path, want in zip(paths, expected, strict=True):
        for compiled in (False, True):
            got = classifier.analyze_capture(path, compile_rules(classifier.load_rules()),
                                             compiled=compiled, options=options)
            assert got.to_dict() == want, (path, compiled)
