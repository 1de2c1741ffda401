"""Exceptions raised by the classifier.

Every error carries enough context to become one line for the user::

    O365TrafficError
    ├── RulesError            a rule set that cannot be used (file, rule, problem)
    └── CaptureError          a capture that cannot be read (file, byte offset)
        ├── NotACaptureError  unreadable, empty, or not pcap/pcapng
        └── CorruptCaptureError  a damaged record or block in the middle

A capture cut off mid-record is not an error: the records before the cut are
reported and the capture is marked incomplete (see :class:`CaptureSummary`).
"""

from __future__ import annotations


class O365TrafficError(Exception):
    """Base class of every error this package raises on purpose."""


class RulesError(O365TrafficError):
    """A rule set is invalid: names the file, the rule and the problem."""

    def __init__(self, path: str, problem: str, rule: str | None = None) -> None:
        self.path = path
        self.rule = rule
        self.problem = problem
        where = f"{path}: rule {_shown(rule)}" if rule is not None else path
        super().__init__(f"{where}: {problem}")


class CaptureError(O365TrafficError):
    """A capture cannot be read (further): names the file and the byte offset."""

    def __init__(self, path: str, problem: str, offset: int | None = None) -> None:
        self.path = path
        self.problem = problem
        self.offset = offset
        at = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{path}{at}: {problem}")


class NotACaptureError(CaptureError):
    """The file is unreadable, empty, or neither pcap nor pcapng."""


class CorruptCaptureError(CaptureError):
    """A record or block header in the middle of the capture is damaged."""


def _shown(text: str, limit: int = 80) -> str:
    """A name from a file, fit for one line: quoted, escaped and cut short."""
    if len(text) > limit:
        text = text[:limit] + "..."
    shown = repr(text)
    return shown if shown.startswith("'") else "'" + shown[1:-1] + "'"
