"""Address prefixes compiled into sorted intervals, searched per packet.

Addresses are 128-bit, as the decoder gives them: two uint64 halves, IPv4 mapped to
``::ffff:a.b.c.d``. The start and end of every prefix cut the address space into
elementary intervals; every address of an interval lies in the same prefixes, so an
interval carries one *address class*: the set of rules whose prefixes contain it, as a
bitmask. A packet's class is one binary search, so tens of thousands of prefixes cost
a few more steps per packet than a handful.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import numpy as np

from ._jit import kernel

__all__ = ["PrefixTable", "parse_prefix", "split_address"]

_V4_MAPPED = 0xFFFF << 32
_ALL = (1 << 128) - 1
_HALF = (1 << 64) - 1


def parse_prefix(text: str) -> tuple[int, int]:
    """The first and last 128-bit address of a CIDR prefix (IPv4 mapped).

    Raises ValueError for anything that is not an IPv4 or IPv6 address or prefix;
    host bits set (``10.0.0.1/8``) are refused too, as a likely typo.
    """
    net = ipaddress.ip_network(text.strip(), strict=True)
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.version == 4:
        first |= _V4_MAPPED
        last |= _V4_MAPPED
    return first, last


def split_address(value: int) -> tuple[int, int]:
    """A 128-bit address as the decoder's (hi, lo) halves."""
    return value >> 64, value & _HALF


@kernel(inline=True)
def find_interval(starts_hi, starts_lo, h, low):  # type: ignore[no-untyped-def]
    """The index of the last interval start at or below address (h, low) (``starts``
    is sorted and begins at 0, so there always is one)."""
    a = 0
    b = starts_hi.shape[0]
    while b - a > 1:
        m = (a + b) >> 1
        sh = starts_hi[m]
        if sh < h or (sh == h and starts_lo[m] <= low):
            a = m
        else:
            b = m
    return a


@kernel(inline=True)
def find_in_block(starts_hi, starts_lo, blocks, h, low):  # type: ignore[no-untyped-def]
    """:func:`find_interval`, the search narrowed first to the intervals that meet the
    address's block (``blocks``, see :meth:`PrefixTable.block_bounds`): an IPv4
    address's /16, else the top 16 bits. With many prefixes, a search then takes a step
    or two instead of a dozen scattered ones."""
    if h == 0 and (low >> np.uint64(32)) == np.uint64(0xFFFF):
        k = (low >> np.uint64(16)) & np.uint64(0xFFFF)
        a = np.int64(blocks[0, k])
        b = np.int64(blocks[1, k]) + 1
    else:
        k = h >> np.uint64(48)
        a = np.int64(blocks[2, k])
        b = np.int64(blocks[3, k]) + 1
    # The same loop as find_interval's, written out: sharing it as a third inlined
    # kernel compiled this search ten times slower (61 against 6 ns per address).
    while b - a > 1:
        m = (a + b) >> 1
        sh = starts_hi[m]
        if sh < h or (sh == h and starts_lo[m] <= low):
            a = m
        else:
            b = m
    return a


@kernel
def find_intervals(starts_hi, starts_lo, blocks, hi, lo, out):  # type: ignore[no-untyped-def]
    """:func:`find_interval` of each address."""
    for i in range(hi.shape[0]):
        out[i] = find_in_block(starts_hi, starts_lo, blocks, hi[i], lo[i])


class PrefixTable:
    """Rule bitmasks per address class (see the module docstring).

    ``prefixes[r]`` lists rule ``r``'s (first, last) addresses; rules without
    prefixes have an empty list. Class 0 is "in no prefix".
    """

    def __init__(self, prefixes: Sequence[Sequence[tuple[int, int]]]) -> None:
        n_rules = len(prefixes)
        self.words = max(1, (n_rules + 63) // 64)
        cuts = {0}
        for ranges in prefixes:
            for first, last in ranges:
                cuts.add(first)
                if last < _ALL:
                    cuts.add(last + 1)
        starts = sorted(cuts)
        index = {s: i for i, s in enumerate(starts)}
        bits = np.zeros((len(starts), self.words), np.uint64)
        for r, ranges in enumerate(prefixes):
            word, bit = r // 64, np.uint64(1 << (r % 64))
            for first, last in ranges:
                a = index[first]
                b = index[last + 1] if last < _ALL else len(starts)
                bits[a:b, word] |= bit
        # Neighbouring intervals often share a rule set: one class per distinct set.
        classes, of_interval = np.unique(bits, axis=0, return_inverse=True)
        empty = np.flatnonzero(~classes.any(axis=1))
        order = np.arange(len(classes))
        if empty.size:  # class 0: in no prefix
            order = np.concatenate([empty, np.delete(order, empty)])
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        self.class_bits: np.ndarray = np.ascontiguousarray(classes[order])
        self.interval_class: np.ndarray = rank[of_interval.ravel()].astype(np.int32)
        self.starts_hi = np.array([s >> 64 for s in starts], np.uint64)
        self.starts_lo = np.array([s & _HALF for s in starts], np.uint64)
        self.blocks = self.block_bounds()
        self.n_prefixes = sum(len(r) for r in prefixes)

    def block_bounds(self) -> np.ndarray:
        """For :func:`find_in_block`: the intervals holding the first and the last
        address of each IPv4 /16 (rows 0, 1) and of each block of IPv6 addresses
        sharing their top 16 bits (rows 2, 3), as indices into the starts."""
        hi, lo = self.starts_hi, self.starts_lo
        k = np.arange(1 << 16, dtype=np.uint64)
        out = np.empty((4, 1 << 16), np.int32)
        # IPv4-mapped addresses have a zero high half: among the starts that share it,
        # the last at or below the address.
        n0 = int(np.searchsorted(hi, np.uint64(0), side="right"))
        first4 = np.uint64(_V4_MAPPED) | (k << np.uint64(16))
        out[0] = np.searchsorted(lo[:n0], first4, side="right") - 1
        out[1] = np.searchsorted(lo[:n0], first4 | np.uint64(0xFFFF), side="right") - 1
        # (top, 0): the starts with a smaller high half, and one more if a start is
        # exactly there; (top + all ones, all ones): every start at or below it.
        first6 = k << np.uint64(48)
        left = np.searchsorted(hi, first6, side="left")
        right = np.searchsorted(hi, first6, side="right")
        exact = (left < right) & (lo[np.minimum(left, lo.size - 1)] == 0)
        out[2] = left + exact - 1
        out[3] = np.searchsorted(hi, first6 | np.uint64((1 << 48) - 1), side="right") - 1
        return out

    def classes(self, hi: np.ndarray, lo: np.ndarray, *, compiled: bool = True) -> np.ndarray:
        """The address class of each address."""
        out = np.empty(hi.shape[0], np.int64)
        if hi.shape[0]:
            if compiled:
                find_intervals.compiled(self.starts_hi, self.starts_lo, self.blocks, hi, lo,
                                        out)
            else:
                _find_intervals_numpy(self.starts_hi, self.starts_lo, hi, lo, out)
        classes: np.ndarray = self.interval_class[out]
        return classes


def _find_intervals_numpy(starts_hi: np.ndarray, starts_lo: np.ndarray, hi: np.ndarray,
                          lo: np.ndarray, out: np.ndarray) -> None:
    """:func:`find_intervals` in numpy, for small inputs that do not pay for numba:
    search the high halves, then among the starts sharing a high half, the low."""
    right = np.searchsorted(starts_hi, hi, side="right")  # first start with a larger hi
    left = np.searchsorted(starts_hi, hi, side="left")  # first start with this hi
    for i in range(hi.shape[0]):
        a, b = int(left[i]), int(right[i])
        if a == b:  # no start has this hi: the interval began at a smaller one
            out[i] = a - 1
        else:
            k = a + int(np.searchsorted(starts_lo[a:b], lo[i], side="right")) - 1
            out[i] = k if k >= a else a - 1
