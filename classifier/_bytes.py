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


@kernel(inline=True, interpreted=_u8)
def u8(buf, i):  # type: ignore[no-untyped-def]
    return np.int64(buf[i])


@kernel(inline=True, interpreted=_be16)
def be16(buf, i):  # type: ignore[no-untyped-def]
    return (np.int64(buf[i]) << 8) | np.int64(buf[i + 1])


@kernel(inline=True, interpreted=_le16)
def le16(buf, i):  # type: ignore[no-untyped-def]
    return (np.int64(buf[i + 1]) << 8) | np.int64(buf[i])


@kernel(inline=True, interpreted=_be32)
def be32(buf, i):  # type: ignore[no-untyped-def]
    return (
        (np.int64(buf[i]) << 24) | (np.int64(buf[i + 1]) << 16)
        | (np.int64(buf[i + 2]) << 8) | np.int64(buf[i + 3])
    )


@kernel(inline=True, interpreted=_le32)
def le32(buf, i):  # type: ignore[no-untyped-def]
    return (
        (np.int64(buf[i + 3]) << 24) | (np.int64(buf[i + 2]) << 16)
        | (np.int64(buf[i + 1]) << 8) | np.int64(buf[i])
    )


@kernel(inline=True, interpreted=_be64)
def be64(buf, i):  # type: ignore[no-untyped-def]
    """Big-endian 64 bits; compiled, the top bit wraps into the sign (stored as uint64)."""
    hi = (
        (np.int64(buf[i]) << 24) | (np.int64(buf[i + 1]) << 16)
        | (np.int64(buf[i + 2]) << 8) | np.int64(buf[i + 3])
    )
    lo = (
        (np.int64(buf[i + 4]) << 24) | (np.int64(buf[i + 5]) << 16)
        | (np.int64(buf[i + 6]) << 8) | np.int64(buf[i + 7])
    )
    return (hi << 32) | lo
