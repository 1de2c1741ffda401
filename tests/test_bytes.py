"""Integers read from a byte buffer by the kernels: compiled (unsigned positions, one
load per value) and interpreted, they read what ``int.from_bytes`` reads."""

from __future__ import annotations

import functools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier._bytes import be16, be32, be64, le16, le32, u8
from classifier._jit import kernel

WIDTHS = [(1, "big"), (2, "big"), (2, "little"), (4, "big"), (4, "little"), (8, "big")]


@kernel
def read_all(buf, at, out):  # type: ignore[no-untyped-def]
    for k in range(at.shape[0]):
        i = at[k]
        out[k, 0] = u8(buf, i)
        out[k, 1] = be16(buf, i)
        out[k, 2] = le16(buf, i)
        out[k, 3] = be32(buf, i)
        out[k, 4] = le32(buf, i)
        out[k, 5] = be64(buf, i)


@functools.cache
def _compiled():  # type: ignore[no-untyped-def]
    """Compiled afresh, not from numba's cache: the cache knows this file's changes,
    not those of the readers it inlines."""
    import numba

    return numba.njit(read_all.python)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(min_size=8, max_size=64), picks=st.lists(st.integers(0, 10**6),
                                                                min_size=1, max_size=20),
       compiled=st.booleans(), read_only=st.booleans())
def test_reads_are_int_from_bytes(data: bytes, picks: list[int], compiled: bool,
                                  read_only: bool) -> None:
    buf = np.frombuffer(data, np.uint8) if read_only else np.frombuffer(data, np.uint8).copy()
    at = np.array([p % (len(data) - 7) for p in picks], np.int64)
    # Stored as the decoder stores addresses: be64's top bit, in the sign when
    # compiled, comes back as uint64's.
    out = np.zeros((at.size, len(WIDTHS)), np.uint64)
    run = _compiled() if compiled else read_all.select(False)
    run(buf, at, out)
    for k, i in enumerate(at.tolist()):
        want = [int.from_bytes(data[i : i + n], order) for n, order in WIDTHS]  # type: ignore[arg-type]
        assert [int(v) for v in out[k]] == want, (i, data.hex())
