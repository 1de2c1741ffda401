"""Integers read from a byte buffer, for kernels.

Compiled, each read is widened to a signed 64-bit integer first: numba types
``uint8 << n`` as unsigned 64-bit, and unsigned mixed with signed becomes float64,
which would be slow and would round large values. Interpreted, the buffer is a
memoryview whose items are already Python ints.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

__all__ = ["be16", "be32", "be64", "le16", "le32", "u8"]


def _u8(buf, i):  # type: ignore[no-untyped-def]
    return buf[i]


def _be16(buf, i):  # type: ignore[no-untyped-def]
    return (buf[i] << 8) | buf[i + 1]


def _le16(buf, i):  # type: ignore[no-untyped-def]
    return (buf[i + 1] << 8) | buf[i]


def _be32(buf, i):  # type: ignore[no-untyped-def]
    return (buf[i] << 24) | (buf[i + 1] << 16) | (buf[i + 2] << 8) | buf[i + 3]


def _le32(buf, i):  # type: ignore[no-untyped-def]
    return (buf[i + 3] << 24) | (buf[i + 2] << 16) | (buf[i + 1] << 8) | buf[i]


def _be64(buf, i):  # type: ignore[no-untyped-def]
    return (_be32(buf, i) << 32) | _be32(buf, i + 4)  # type: ignore[no-untyped-call]


# Compiled, the buffer is indexed by an unsigned position: numba then drops its
# negative-index fixup, and LLVM merges a value's byte loads into one load (and a byte
# swap): six times faster per value. Positions are never negative here.
_1, _2, _3, _4, _5, _6, _7 = (np.uint64(k) for k in range(1, 8))


@kernel(inline=True, interpreted=_u8)
def u8(buf, i):  # type: ignore[no-untyped-def]
    return np.int64(buf[np.uint64(i)])


@kernel(inline=True, interpreted=_be16)
def be16(buf, i):  # type: ignore[no-untyped-def]
    j = np.uint64(i)
    return (np.int64(buf[j]) << 8) | np.int64(buf[j + _1])


@kernel(inline=True, interpreted=_le16)
def le16(buf, i):  # type: ignore[no-untyped-def]
    j = np.uint64(i)
    return (np.int64(buf[j + _1]) << 8) | np.int64(buf[j])


@kernel(inline=True, interpreted=_be32)
def be32(buf, i):  # type: ignore[no-untyped-def]
    j = np.uint64(i)
    return (
        (np.int64(buf[j]) << 24) | (np.int64(buf[j + _1]) << 16)
        | (np.int64(buf[j + _2]) << 8) | np.int64(buf[j + _3])
    )


@kernel(inline=True, interpreted=_le32)
def le32(buf, i):  # type: ignore[no-untyped-def]
    j = np.uint64(i)
    return (
        (np.int64(buf[j + _3]) << 24) | (np.int64(buf[j + _2]) << 16)
        | (np.int64(buf[j + _1]) << 8) | np.int64(buf[j])
    )


@kernel(inline=True, interpreted=_be64)
def be64(buf, i):  # type: ignore[no-untyped-def]
    """Big-endian 64 bits; compiled, the top bit wraps into the sign (stored as uint64)."""
    j = np.uint64(i)
    hi = (
        (np.int64(buf[j]) << 24) | (np.int64(buf[j + _1]) << 16)
        | (np.int64(buf[j + _2]) << 8) | np.int64(buf[j + _3])
    )
    lo = (
        (np.int64(buf[j + _4]) << 24) | (np.int64(buf[j + _5]) << 16)
        | (np.int64(buf[j + _6]) << 8) | np.int64(buf[j + _7])
    )
    return (hi << 32) | lo
