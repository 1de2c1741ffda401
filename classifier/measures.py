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

import functools
import ipaddress
from collections.abc import Sequence

import numpy as np

from ._jit import kernel
from .decode import Headers
from .prefixes import find_interval

__all__ = [
    "DEFAULT_INSIDE",
    "DIRECTIONS",
    "EXPECTED_DSCP",
    "Inside",
    "Series",
    "count_details",
    "directions_of",
    "parse_duration",
    "tally",
]

@kernel
def tally(cat, wire, cap, anomaly, ts, packets, nbytes, anomalies, span):  # type: ignore[no-untyped-def]
    """Add each packet to its category's ``packets`` and ``nbytes`` and to its
    anomaly's count, widen ``span`` (first, last timestamp) to the batch's, in one
    pass; returns how many packets have more bytes captured than on the wire."""
    over = 0
    lo = span[0]
    hi = span[1]
    for i in range(cat.shape[0]):
        c = cat[i]
        w = wire[i]
        packets[c] += 1
        nbytes[c] += w
        anomalies[anomaly[i]] += 1
        if cap[i] > w:
            over += 1
        t = ts[i]
        if t < lo:
            lo = t
        if t > hi:
            hi = t
    span[0] = lo
    span[1] = hi
    return over


_16, _32, _FFFF = np.uint64(16), np.uint64(32), np.uint64(0xFFFF)


@kernel
def count_details(cat, wire, src_hi, src_lo, dst_hi, dst_lo, ip, dscp, skip, starts_hi,  # type: ignore[no-untyped-def]
                  starts_lo, inside, v4_blocks, expected, rows, directions, qos, s_packets,
                  s_bytes, out_direction):
    """Directions, QoS and series of a batch in one pass: each packet's direction
    (into ``out_direction``) from which of its addresses are inside (``inside`` flags
    the address intervals beginning at ``starts``; ``v4_blocks`` answers for an IPv4
    address from its /16 when the intervals do not cut it), its count and bytes per category
    and direction (``directions``), its DSCP against its category's ``expected`` one
    (``qos``), and per series row (``s_packets``, ``s_bytes``). Packets flagged in
    ``skip`` (held back: counted later) are left out; ``skip`` may be empty."""
    skipping = skip.shape[0] > 0
    for i in range(cat.shape[0]):
        if skipping and skip[i]:
            continue
        if ip[i] == 0:
            d = 2  # local: frames without IP
        else:
            # One load for an IPv4 address in a /16 wholly inside or outside (any
            # /16 with the default networks), where a search takes a few dependent ones.
            lo = src_lo[i]
            f = -1
            if src_hi[i] == 0 and (lo >> _32) == _FFFF:
                f = v4_blocks[(lo >> _16) & _FFFF]
            s_in = f == 1 if f >= 0 else inside[find_interval(starts_hi, starts_lo, src_hi[i], lo)]
            lo = dst_lo[i]
            f = -1
            if dst_hi[i] == 0 and (lo >> _32) == _FFFF:
                f = v4_blocks[(lo >> _16) & _FFFF]
            d_in = f == 1 if f >= 0 else inside[find_interval(starts_hi, starts_lo, dst_hi[i], lo)]
            if s_in and d_in:
                d = 2
            elif s_in:
                d = 0
            elif d_in:
                d = 1
            else:
                d = 3
        out_direction[i] = d
        c = cat[i]
        w = wire[i]
        directions[c, d, 0] += 1
        directions[c, d, 1] += w
        e = expected[c]
        if e >= 0:
            qos[c, d, 0] += 1
            if dscp[i] == e:
                qos[c, d, 1] += 1
        r = rows[i]
        s_packets[r, c, d] += 1
        s_bytes[r, c, d] += w


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
        self.starts_hi, self.starts_lo, self.flags = _intervals(nets)
        merged = _merged([(0xFFFF00000000 | int(n.network_address),
                           0xFFFF00000000 | int(n.broadcast_address))
                          for n in nets if n.version == 4])
        self._starts = np.array([m[0] for m in merged], np.uint64)
        self._ends = np.array([m[1] for m in merged], np.uint64)
        self._v6 = []
        for n in nets:
            if n.version == 6:
                value = int(n.network_address)
                mask = ((1 << 128) - 1) ^ ((1 << (128 - n.prefixlen)) - 1)
                self._v6.append(tuple(np.uint64(x) for x in (
                    value >> 64, value & (2**64 - 1), mask >> 64, mask & (2**64 - 1))))

    @functools.cached_property
    def v4_blocks(self) -> np.ndarray:
        """Per IPv4 /16, for :func:`count_details` (see :func:`_v4_blocks`): made on
        first use, since only the compiled pass reads it (2.5 ms of every start-up)."""
        return _v4_blocks(self.starts_hi, self.starts_lo, self.flags)

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


_MAPPED = (0xFFFF << 32, (0xFFFF << 32) | 0xFFFFFFFF)  # IPv4-mapped addresses


def _merged(spans: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Address spans (first, last), sorted, overlapping or adjacent ones joined."""
    merged: list[list[int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return merged


def _v4_blocks(starts_hi: np.ndarray, starts_lo: np.ndarray, flags: np.ndarray,
               ) -> np.ndarray:
    """Per IPv4 /16 (int8): 1 wholly inside, 0 wholly outside, -1 cut by an interval
    start (then the search decides). IPv4-mapped addresses have a high half of 0, and
    the starts with a high half of 0 come first, in order."""
    low = starts_lo[starts_hi == 0]
    first = np.arange(1 << 16, dtype=np.uint64) << np.uint64(16) | np.uint64(_MAPPED[0])
    a = np.searchsorted(low, first, side="right") - 1
    b = np.searchsorted(low, first | np.uint64(0xFFFF), side="right") - 1
    return np.where(a == b, flags[a].astype(np.int8), np.int8(-1)).astype(np.int8)


def _intervals(nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 128-bit address line cut into intervals (starts as hi and lo halves, the
    first at 0) flagged inside or not, for :func:`count_details`. IPv4 networks are
    IPv4-mapped; IPv6 networks never cover the IPv4-mapped block (an IPv4 address is
    inside only by an IPv4 network), as in :class:`Inside`."""
    spans: list[tuple[int, int]] = []
    for n in nets:
        first, last = int(n.network_address), int(n.broadcast_address)
        if n.version == 4:
            spans.append((_MAPPED[0] | first, _MAPPED[0] | last))
            continue
        if first < _MAPPED[0]:
            spans.append((first, min(last, _MAPPED[0] - 1)))
        if last > _MAPPED[1]:
            spans.append((max(first, _MAPPED[1] + 1), last))
    starts, flags = [0], [False]
    for lo, hi in _merged(spans):
        if lo == starts[-1]:
            flags[-1] = True
        else:
            starts.append(lo)
            flags.append(True)
        if hi + 1 < 1 << 128:
            starts.append(hi + 1)
            flags.append(False)
    mask = (1 << 64) - 1
    return (np.array([v >> 64 for v in starts], np.uint64),
            np.array([v & mask for v in starts], np.uint64), np.array(flags, np.bool_))


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


class Series:
    """Per interval (epoch-aligned bins of ``interval_ns``), category and direction:
    packets and bytes; per interval and category: flows active.

    Sparse: only intervals that saw packets have a row (a capture with a stray
    timestamp decades off costs one row, not millions); rates count the intervals in
    between as empty. Bounded: past ``MAX_ROWS`` rows the interval doubles (rows merge
    pairwise: counts add up; flows active take the larger of the two, a lower bound).
    """

    MAX_ROWS = 20_000

    def __init__(self, interval_ns: int, n_categories: int) -> None:
        self.interval_ns = interval_ns
        self.n_categories = n_categories
        self.row_of: dict[int, int] = {}  # absolute bin number -> row
        k, d = n_categories, len(DIRECTIONS)
        self.packets = np.zeros((0, k, d), np.int64)
        self.bytes = np.zeros((0, k, d), np.int64)
        self.active = np.zeros((0, k), np.int64)

    @property
    def n_rows(self) -> int:
        return len(self.row_of)

    def rows(self, bins: np.ndarray) -> np.ndarray:
        """The row of every bin (rows are made for new bins)."""
        lo, hi = int(bins.min()), int(bins.max())
        if hi - lo < 65_536:
            # A batch spans few intervals (packets come in time order): map by offset.
            present = np.flatnonzero(np.bincount(bins - lo, minlength=hi - lo + 1))
            table = np.zeros(hi - lo + 1, np.int64)
            table[present] = [self._row(lo + int(b)) for b in present]
            self._grow(len(self.row_of))
            rows: np.ndarray = table[bins - lo]
            return rows
        uniq, inverse = np.unique(bins, return_inverse=True)
        found = np.array([self._row(int(b)) for b in uniq], np.int64)
        self._grow(len(self.row_of))
        rows = found[inverse]
        return rows

    def _row(self, b: int) -> int:
        r = self.row_of.get(b)
        if r is None:
            r = self.row_of[b] = len(self.row_of)
        return r

    def _grow(self, n: int) -> None:
        if n <= self.packets.shape[0]:
            return
        size = max(n, 2 * self.packets.shape[0], 16)
        for name in ("packets", "bytes", "active"):
            old = getattr(self, name)
            grown = np.zeros((size, *old.shape[1:]), np.int64)
            grown[: old.shape[0]] = old
            setattr(self, name, grown)

    def add(self, rows: np.ndarray, cat: np.ndarray, direction: np.ndarray,
            wire: np.ndarray) -> None:
        k, d = self.n_categories, len(DIRECTIONS)
        lo, hi = int(rows.min()), int(rows.max())
        index = ((rows - lo) * k + cat) * d + direction
        shape = (hi - lo + 1, k, d)
        size = shape[0] * k * d
        self.packets[lo : hi + 1] += np.bincount(index, minlength=size).reshape(shape)
        self.bytes[lo : hi + 1] += np.bincount(index, weights=wire, minlength=size).astype(
            np.int64).reshape(shape)

    def ordered(self) -> tuple[np.ndarray, np.ndarray]:
        """The bins that have rows, in time order, and their rows."""
        bins = np.fromiter(self.row_of.keys(), np.int64, len(self.row_of))
        rows = np.fromiter(self.row_of.values(), np.int64, len(self.row_of))
        order = np.argsort(bins, kind="stable")
        return bins[order], rows[order]

    def coarsened(self, factor: int) -> Series:
        """The same series over intervals ``factor`` times longer."""
        out = Series(self.interval_ns * factor, self.n_categories)
        if not self.n_rows:
            return out
        bins, rows = self.ordered()
        target = out.rows(bins // factor)
        np.add.at(out.packets, target, self.packets[rows])
        np.add.at(out.bytes, target, self.bytes[rows])
        np.maximum.at(out.active, target, self.active[rows])
        return out

    def __add__(self, other: Series) -> Series:
        if other.interval_ns != self.interval_ns:
            wide = max(self.interval_ns, other.interval_ns)
            if wide % self.interval_ns or wide % other.interval_ns:
                raise ValueError("cannot merge series of unrelated intervals")
            a = self.coarsened(wide // self.interval_ns) if self.interval_ns < wide else self
            b = other.coarsened(wide // other.interval_ns) if other.interval_ns < wide else other
            return a + b
        out = Series(self.interval_ns, self.n_categories)
        for s in (self, other):
            if not s.n_rows:
                continue
            bins, rows = s.ordered()
            target = out.rows(bins)
            out.packets[target] += s.packets[rows]
            out.bytes[target] += s.bytes[rows]
            out.active[target] += s.active[rows]
        return out

    def rates(self) -> np.ndarray:
        """Average, peak and 95th-percentile bit rate per category and direction, over
        every interval from the first to the last (intervals without a row count as
        0): an array [categories, directions, 3] of bits per second."""
        k, d = self.n_categories, len(DIRECTIONS)
        out = np.zeros((k, d, 3))
        if not self.n_rows:
            return out
        bins, rows = self.ordered()
        span = int(bins[-1] - bins[0] + 1)
        bps = self.bytes[rows] * 8 / (self.interval_ns / 1e9)  # [rows, k, d]
        out[:, :, 0] = bps.sum(axis=0) / span
        out[:, :, 1] = bps.max(axis=0)
        out[:, :, 2] = _percentile_with_zeros(bps, span - len(rows), 95)
        return out


def _percentile_with_zeros(values: np.ndarray, zeros: int, q: float) -> np.ndarray:
    """numpy's linear percentile along axis 0 of ``values`` plus ``zeros`` rows of 0,
    without making those rows."""
    n = values.shape[0] + zeros
    ranked = np.sort(values, axis=0)  # the zeros come first: values are >= 0
    pos = (n - 1) * q / 100
    lo, hi = int(np.floor(pos)), int(np.ceil(pos))

    def at(i: int) -> np.ndarray:
        return np.zeros(values.shape[1:]) if i < zeros else ranked[i - zeros]

    frac = pos - lo
    result: np.ndarray = at(lo) * (1 - frac) + at(hi) * frac
    return result
