"""Human units: bit rates in bit/s, kbit/s, Mbit/s, Gbit/s; sizes in B, kB, MB, GB (SI)."""

from __future__ import annotations

import math

__all__ = ["human_bytes", "human_count", "human_duration", "human_rate", "human_share"]


def _scaled(value: float, units: tuple[str, ...]) -> str:
    if not math.isfinite(value):
        return "n/a"
    v = float(value)
    for unit in units[:-1]:
        if abs(v) < 999.5:
            return f"{_three(v)} {unit}"
        v /= 1000
    return f"{_three(v)} {units[-1]}"


def _three(v: float) -> str:
    """Three significant digits, never in exponent form."""
    a = abs(v)
    if a == 0 or a >= 99.95:
        return f"{v:,.0f}"
    if a >= 9.995:
        return f"{v:.1f}"
    return f"{v:.2f}"


def human_rate(bps: float) -> str:
    """``58.0 kbit/s``, ``2.50 Mbit/s``."""
    return _scaled(bps, ("bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"))


def human_bytes(n: float) -> str:
    """``812 B``, ``1.20 MB``, ``3.40 GB``."""
    if abs(n) < 1000:
        return f"{int(n)} B"
    return _scaled(n, ("B", "kB", "MB", "GB", "TB", "PB"))


def human_share(fraction: float) -> str:
    """``12.5%``."""
    return f"{100 * fraction:.1f}%"


def human_count(n: float) -> str:
    """Integers with thousands separators; fractions with two decimals."""
    if float(n).is_integer():
        return f"{int(n):,}"
    return f"{n:,.2f}"


def human_duration(seconds: float) -> str:
    """``45.2 s``, ``12 min 5 s``, ``3 h 20 min``, ``12 d 4 h``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        m, s = divmod(round(seconds), 60)
        return f"{m} min {s} s"
    if seconds < 2 * 86400:
        h, rest = divmod(round(seconds), 3600)
        return f"{h} h {rest // 60} min"
    d, rest = divmod(round(seconds), 86400)
    return f"{d:,} d {rest // 3600} h"
