"""Matching later fragments to their first fragment within a batch."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.fragments import _first_before_columns, first_before


def _reference(keys: np.ndarray, is_first: np.ndarray) -> np.ndarray:
    """Row by row, backwards: the definition."""
    out = np.full(len(keys), -1, np.int64)
    for i in range(len(keys)):
        if not is_first[i]:
            for r in range(i - 1, -1, -1):
                if is_first[r] and (keys[r] == keys[i]).all():
                    out[i] = r
                    break
    return out


# Few distinct values per column: many rows share keys, and keys that differ in one
# column only are common (the hash must not confuse them); the identification
# column takes more values, small ones (repeated keys) and any (different keys that
# collide in the table: sequential ones would be spread out by the hash).
column = st.sampled_from([0, 2**64 - 1])
ident = st.one_of(st.integers(0, 8), st.integers(0, 2**64 - 1))
key = st.tuples(column, column, column, column, column, column, ident)
rows = st.lists(st.tuples(key, st.booleans()), min_size=1, max_size=120)


@settings(max_examples=300, deadline=None)
@given(rows=rows)
def test_the_kernel_finds_the_last_first_fragment_before_each_later_one(
        rows: list[tuple[list[int], bool]]) -> None:
    keys = np.array([k for k, _ in rows], np.uint64)
    is_first = np.array([f for _, f in rows], bool)
    want = _reference(keys, is_first)
    got = np.full(len(rows), -1, np.int64)
    first_before.compiled(keys, is_first, got)
    assert got.tolist() == want.tolist()
    # The numpy form may leave a match to the tables (equal hashes), never a wrong one.
    cols = np.full(len(rows), -1, np.int64)
    _first_before_columns(keys, is_first, cols)
    assert ((cols == want) | (cols == -1)).all()
    assert (cols[want == -1] == -1).all()


def test_the_kernel_leaves_rows_without_a_match_as_they_were() -> None:
    keys = np.array([[4, 0, 1, 0, 2, 17, 9], [4, 0, 1, 0, 2, 17, 10],
                     [4, 0, 1, 0, 2, 17, 9], [4, 0, 1, 0, 2, 17, 9]], np.uint64)
    is_first = np.array([False, True, True, False])
    out = np.full(4, -7, np.int64)
    first_before.compiled(keys, is_first, out)
    assert out.tolist() == [-7, -7, -7, 2]
