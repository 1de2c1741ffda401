"""Link capacity for ``plan_users`` users from a capture of ``users`` users, two ways.

- **Scaled**: the measured 95th-percentile rate of everything crossing the link in one
  direction, per user, times the planned users.
- **Bottom-up**: per media category, the 95th percentile of concurrent streams per
  user times the planned users times Microsoft's per-stream figure; plus the measured
  95th-percentile rate of media whose modality is unknown, and of the rest of the
  traffic (non-media), each scaled the same way.

Each estimate is a list of :class:`Step`: a figure, its unit, and the assumption that
produces it, so that a report can print every assumption next to its number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .guidance import figure_for

__all__ = ["Estimate", "Step", "bottom_up", "scaled"]


@dataclass(frozen=True)
class Step:
    """One figure of an estimate. ``unit``: ``bps`` (a bit rate), ``streams`` or
    ``users`` (counts)."""

    label: str
    value: float
    unit: str
    assumption: str

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "value": self.value, "unit": self.unit,
                "assumption": self.assumption}


@dataclass
class Estimate:
    """A capacity estimate (bit/s) and the steps that lead to it."""

    method: str
    direction: str
    steps: list[Step] = field(default_factory=list)

    @property
    def value(self) -> float:
        return self.steps[-1].value

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "direction": self.direction, "value_bps": self.value,
                "steps": [s.to_dict() for s in self.steps]}


def _check(users: int, plan_users: int) -> None:
    if users < 1 or plan_users < 1:
        raise ValueError("users and planned users must be at least 1")


def scaled(p95_bps: float, users: int, plan_users: int, *, direction: str,
           interval_s: float) -> Estimate:
    """The measured 95th-percentile rate per user, times ``plan_users``."""
    _check(users, plan_users)
    per_user = p95_bps / users
    need = per_user * plan_users
    return Estimate("scaled", direction, [
        Step(f"95th-percentile rate of all {direction} traffic", p95_bps, "bps",
             f"measured over {interval_s:g} s intervals, the time the captures cover "
             "(intervals without packets count as 0); traffic that stays inside or outside "
             "the network (local, external) does not cross the link and is left out"),
        Step("per user", per_user, "bps",
             f"the capture holds the traffic of {users:,} users (--users)"),
        Step(f"needed for {plan_users:,} users", need, "bps",
             "traffic grows in proportion to the number of users; no headroom added"),
    ])


def bottom_up(streams_p95: Mapping[str, float], per_stream_kbps: Mapping[str, float],
              non_media_p95_bps: float, users: int, plan_users: int, *, direction: str,
              level: str, unknown_p95_bps: Mapping[str, float] | None = None) -> Estimate:
    """Concurrent streams per user times ``plan_users`` times the per-stream figure,
    per media category, plus the non-media 95th percentile scaled per user.
    ``unknown_p95_bps``: the 95th-percentile rate of each media category whose
    modality is unknown (no per-stream figure applies), scaled per user too."""
    _check(users, plan_users)
    factor = plan_users / users
    steps: list[Step] = []
    total = 0.0
    for category, p95 in streams_p95.items():
        kbps = per_stream_kbps[category]
        streams = p95 * factor
        rate = streams * kbps * 1000
        total += rate
        row = figure_for(category)
        steps.append(Step(
            f"{category} streams at {plan_users:,} users", streams, "streams",
            f"the 95th percentile of concurrent {category} streams ({p95:g}) per user, "
            "times the planned users; not rounded"))
        steps.append(Step(
            f"{category}: streams x {kbps:,g} kbit/s", rate, "bps",
            f"Microsoft's Teams {level} {direction} figure per {category} stream "
            f"({row.scenario}; source in the guidance table)"))
    for category, p95_bps in (unknown_p95_bps or {}).items():
        rate = p95_bps * factor
        total += rate
        steps.append(Step(
            f"{category} (modality unknown)", rate, "bps",
            f"the measured 95th-percentile {direction} rate of {category} "
            f"({p95_bps:,.0f} bit/s) per user, times the planned users: the rules found "
            "these calls by address or signature, not by modality, so no per-stream "
            "figure applies"))
    non_media = non_media_p95_bps * factor
    total += non_media
    steps.append(Step(
        "non-media traffic", non_media, "bps",
        f"the measured 95th-percentile {direction} rate of every other category "
        f"({non_media_p95_bps:,.0f} bit/s) per user, times the planned users"))
    steps.append(Step(
        f"needed for {plan_users:,} users", total, "bps",
        "the sum of the figures above; 95th percentiles of parts that peak at different "
        "times add up to more than the 95th percentile of their sum (conservative)"))
    return Estimate("bottom-up", direction, steps)
