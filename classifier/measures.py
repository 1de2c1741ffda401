"""Directions, time series and DSCP marking: what bandwidth planning needs beyond totals.

- **Direction** of a packet, from which of its addresses are *inside* (the user's
  network): ``upload`` (inside to outside), ``download`` (outside to inside), ``local``
  (both inside, and frames without IP) or ``external`` (neither inside).
- **Series**: packets and bytes per interval, category and direction, and the flows
  active per interval and category (for audio, video and sharing: concurrent
  streams). Intervals are aligned on the epoch, so series of different captures and
  of byte ranges of one capture add up bin by bin.
- **QoS**: for media, how many packets carry Microsoft's recommended DSCP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .decode import Headers

__all__ = [
    "DEFAULT_INSIDE",
    "DIRECTIONS",
    "EXPECTED_DSCP",
    "Inside",
    "Series",
    "directions_of",
    "parse_duration",
]

DIRECTIONS = ("upload", "download", "local", "external")
UPLOAD, DOWNLOAD, LOCAL, EXTERNAL = range(4)

#: The user's network by default: the private and shared address ranges.
DEFAULT_INSIDE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")

#: Microsoft's recommended DSCP per media category (Teams/Skype QoS guidance).
EXPECTED_DSCP = {"audio": 46, "video": 34, "desktop-sharing": 18}


class Inside:
    """Membership of 128-bit addresses (IPv4 as IPv4-mapped) in a set of CIDRs.

    IPv4 networks become sorted, merged intervals of the low 64 bits (one binary
    search per address); IPv6 networks are tested by mask, only on IPv6 addresses.
    """

    def __init__(self, cidrs: Sequence[str] = DEFAULT_INSIDE) -> None:
        nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        self.cidrs = tuple(str(n) for n in nets)
        spans = sorted((0xFFFF00000000 | int(n.network_address),
                        0xFFFF00000000 | int(n.broadcast_address))
                       for n in nets if n.version == 4)
        merged: list[list[int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._starts = np.array([m[0] for m in merged], np.uint64)
        self._ends = np.array([m[1] for m in merged], np.uint64)
        self._v6 = []
        for n in nets:
            if n.version == 6:
                value = int(n.network_address)
                mask = ((1 << 128) - 1) ^ ((1 << (128 - n.prefixlen)) - 1)
                self._v6.append(tuple(np.uint64(x) for x in (
                    value >> 64, value & (2**64 - 1), mask >> 64, mask & (2**64 - 1))))

    def __call__(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        v4 = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
        out = np.zeros(hi.shape[0], bool)
        if self._starts.size:
            idx = np.searchsorted(self._starts, lo, side="right") - 1
            out = v4 & (idx >= 0) & (lo <= self._ends[np.maximum(idx, 0)])
        if self._v6:
            six = np.flatnonzero(~v4)
            if six.size:
                h6, l6 = hi[six], lo[six]
                hit = np.zeros(six.size, bool)
                for net_hi, net_lo, mask_hi, mask_lo in self._v6:
                    hit |= ((h6 & mask_hi) == net_hi) & ((l6 & mask_lo) == net_lo)
                out[six] = hit
        return out


def directions_of(h: Headers, inside: Inside) -> np.ndarray:
    """The direction code of every packet (see the module docstring)."""
    src_in = inside(h.src_hi, h.src_lo)
    dst_in = inside(h.dst_hi, h.dst_lo)
    d = np.full(len(h), EXTERNAL, np.int64)
    d[src_in & ~dst_in] = UPLOAD
    d[~src_in & dst_in] = DOWNLOAD
    d[(src_in & dst_in) | (h.ip == 0)] = LOCAL
    return d


def parse_duration(text: str) -> int:
    """``1s``, ``100ms``, ``5m``, ``1h``, ``250us`` (or plain seconds) as nanoseconds."""
    units = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
             "m": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000}
    t = text.strip().lower()
    for unit in sorted(units, key=len, reverse=True):
        if t.endswith(unit):
            number = t[: -len(unit)]
            break
    else:
        unit, number = "s", t
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (e.g. 1s, 100ms, 5m)") from None
    ns = round(value * units[unit])
    if ns <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return ns


@dataclass
class Series:
    """Per interval (epoch-aligned bins of ``interval_ns``), category and direction:
    packets and bytes; per interval and category: flows active."""

    interval_ns: int
    n_categories: int
    base: int = 0  # absolute bin number of row 0
    packets: np.ndarray | None = None  # [bins, categories, directions]
    bytes: np.ndarray | None = None
    active: np.ndarray | None = None  # [bins, categories]

    def cover(self, lo: int, hi: int) -> None:
        """Make rows for absolute bins ``lo``..``hi``."""
        k, d = self.n_categories, len(DIRECTIONS)
        if self.packets is None or self.bytes is None or self.active is None:
            self.base = lo
            self.packets = np.zeros((hi - lo + 1, k, d), np.int64)
            self.bytes = np.zeros((hi - lo + 1, k, d), np.int64)
            self.active = np.zeros((hi - lo + 1, k), np.int64)
            return
        top = self.base + self.packets.shape[0] - 1
        if lo >= self.base and hi <= top:
            return
        new_lo, new_hi = min(lo, self.base), max(hi, top)
        at = self.base - new_lo
        n = new_hi - new_lo + 1
        for name in ("packets", "bytes", "active"):
            old = getattr(self, name)
            grown = np.zeros((n, *old.shape[1:]), np.int64)
            grown[at : at + old.shape[0]] = old
            setattr(self, name, grown)
        self.base = new_lo

    def add(self, bins: np.ndarray, cat: np.ndarray, direction: np.ndarray,
            wire: np.ndarray) -> None:
        assert self.packets is not None and self.bytes is not None
        k, d = self.n_categories, len(DIRECTIONS)
        lo, hi = int(bins.min()), int(bins.max())
        index = ((bins - lo) * k + cat) * d + direction
        shape = (hi - lo + 1, k, d)
        size = shape[0] * k * d
        rows = slice(lo - self.base, hi - self.base + 1)
        self.packets[rows] += np.bincount(index, minlength=size).reshape(shape)
        self.bytes[rows] += np.bincount(index, weights=wire, minlength=size).astype(
            np.int64).reshape(shape)

    def __add__(self, other: Series) -> Series:
        if other.interval_ns != self.interval_ns:
            raise ValueError("cannot merge series of different intervals")
        out = Series(self.interval_ns, self.n_categories)
        for s in (self, other):
            if s.packets is None or s.bytes is None or s.active is None:
                continue
            out.cover(s.base, s.base + s.packets.shape[0] - 1)
            assert out.packets is not None and out.bytes is not None
            assert out.active is not None
            at = s.base - out.base
            n = s.packets.shape[0]
            out.packets[at : at + n] += s.packets
            out.bytes[at : at + n] += s.bytes
            out.active[at : at + n] += s.active
        return out

    @property
    def n_bins(self) -> int:
        return 0 if self.packets is None else int(self.packets.shape[0])

    def rates(self) -> np.ndarray:
        """Average, peak and 95th-percentile bit rate per category and direction,
        over every interval from the first to the last (empty intervals count as 0):
        an array [categories, directions, 3] of bits per second."""
        k, d = self.n_categories, len(DIRECTIONS)
        out = np.zeros((k, d, 3))
        if self.bytes is None or self.n_bins == 0:
            return out
        bps = self.bytes * 8 / (self.interval_ns / 1e9)
        out[:, :, 0] = bps.mean(axis=0)
        out[:, :, 1] = bps.max(axis=0)
        out[:, :, 2] = np.percentile(bps, 95, axis=0, method="linear")
        return out
