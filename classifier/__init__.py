"""o365-traffic: classify packet captures into Office 365 flow categories.

    >>> import classifier
    >>> result = classifier.analyze(["capture.pcap"])          # doctest: +SKIP
    >>> result.categories["audio"].bytes                       # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    CaptureError,
    CorruptCaptureError,
    NotACaptureError,
    O365TrafficError,
    RulesError,
)
from .pipeline import analyze, analyze_capture, expand_paths
from .result import AnalysisResult, CaptureSummary, Totals
from .rules import Rule, RuleSet, load_rules

__all__ = [
    "AnalysisResult",
    "CaptureError",
    "CaptureSummary",
    "CorruptCaptureError",
    "NotACaptureError",
    "O365TrafficError",
    "Rule",
    "RuleSet",
    "RulesError",
    "Totals",
    "__version__",
    "analyze",
    "analyze_capture",
    "expand_paths",
    "load_rules",
]
