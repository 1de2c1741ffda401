"""Matching later fragments to their first fragment within a batch."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from classifier.fragments import _match_within_columns, match_within

MAX = 2**64 - 1
base_key = st.tuples(st.sampled_from([4, 6]), *[st.sampled_from([0, MAX])] * 4,
                     st.sampled_from([6, 17]),
                     st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 2)))


def _flips(k: tuple[int, ...]) -> list[tuple[int, ...]]:
    """``k`` and the keys that differ from it in one column: the table must tell
    them apart (IPv6 keys leave the protocol out, so that flip is the same datagram)."""
    other = {0: {4: 6, 6: 4}, 5: {6: 17, 17: 6}}
    out = [k]
    for col in range(7):
        v = list(k)
        if col in other:
            v[col] = other[col][k[col]]
        elif col == 6:
            v[col] = k[col] + 1
        else:
            v[col] = MAX - k[col]
        out.append(tuple(v))
    return out


@st.composite
def batches(draw: st.DrawFn) -> list[dict[str, int]]:
    """Rows whose keys come from a few keys and their one-column neighbours."""
    pool = [k for base in draw(st.lists(base_key, min_size=1, max_size=2)) for k in _flips(base)]
    rows = []
    for _ in range(draw(st.integers(1, 120))):
        ip, src_hi, src_lo, dst_hi, dst_lo, proto, frag_id = draw(st.sampled_from(pool))
        rows.append({
            "flags": draw(st.sampled_from([0, 1, 2, 4, 5])),  # ports, later, first, both
            "ip": ip, "src_hi": src_hi, "src_lo": src_lo, "dst_hi": dst_hi,
            "dst_lo": dst_lo, "proto": proto, "frag_id": frag_id,
            "cat": draw(st.integers(0, 12)), "sport": draw(st.integers(0, 65535)),
            "dport": draw(st.integers(0, 65535)), "side": draw(st.sampled_from([-1, 0, 1])),
        })
    return rows


DTYPES = {"flags": np.uint8, "ip": np.uint8, "src_hi": np.uint64, "src_lo": np.uint64,
          "dst_hi": np.uint64, "dst_lo": np.uint64, "proto": np.uint8,
          "frag_id": np.uint32, "cat": np.int32, "sport": np.uint16, "dport": np.uint16,
          "side": np.int8}
INFO = ("cat", "sport", "dport", "side")


def _key(r: dict[str, int]) -> tuple[int, ...]:
    """A datagram's key: IPv6 leaves the protocol out."""
    return (r["ip"], r["src_hi"], r["src_lo"], r["dst_hi"], r["dst_lo"],
            r["proto"] if r["ip"] == 4 else 0, r["frag_id"])


def _reference(rows: list[dict[str, int]]) -> tuple[list[dict[str, int]], list[int]]:
    """Row by row, looking back: the definition."""
    out = [dict(r) for r in rows]
    todo = []
    for i, r in enumerate(rows):
        if not r["flags"] & 6:
            continue
        if r["flags"] & 4:
            todo.append(i)
            continue
        source = next((j for j in range(i - 1, -1, -1)
                       if rows[j]["flags"] & 4 and _key(rows[j]) == _key(r)), None)
        if source is None:
            todo.append(i)
        else:
            for name in INFO:
                out[i][name] = out[source][name]
    return out, todo


def _run(fn: object, rows: list[dict[str, int]]) -> tuple[dict[str, np.ndarray], list[int]]:
    cols = {name: np.array([r[name] for r in rows], dtype) for name, dtype in DTYPES.items()}
    todo = np.full(len(rows), -9, np.int64)
    count = int(fn(*cols.values(), todo))  # type: ignore[operator]
    return cols, todo[:count].tolist()


@functools.cache
def _colliding() -> Callable[..., Any]:
    """The kernel with every key hashed to the same slot: each lookup then compares
    keys with many others, which a good hash leaves to chance."""
    import numba

    glb = dict(match_within.py.__globals__, _GOLDEN=np.uint64(0))
    return numba.njit(types.FunctionType(match_within.py.__code__, glb, "colliding"))  # type: ignore[no-any-return]


@settings(max_examples=300, deadline=None)
@given(rows=batches())
def test_later_fragments_take_the_last_first_fragment_before_them(
        rows: list[dict[str, int]]) -> None:
    want, want_todo = _reference(rows)
    for kernel in (match_within.compiled, _colliding()):
        cols, todo = _run(kernel, rows)
        assert todo == want_todo
        for name in DTYPES:
            assert cols[name].tolist() == [r[name] for r in want], name
    # The numpy form may leave a match to the tables (equal hashes), never a wrong one.
    cols, todo = _run(_match_within_columns, rows)
    assert set(want_todo) <= set(todo)
    for i, r in enumerate(want):
        if i not in todo:
            assert [int(cols[name][i]) for name in INFO] == [r[name] for name in INFO]


def test_fragments_without_a_match_are_left_as_they_were() -> None:
    base = {"flags": 2, "ip": 4, "src_hi": 0, "src_lo": 1, "dst_hi": 0, "dst_lo": 2,
            "proto": 17, "frag_id": 9, "cat": 1, "sport": 0, "dport": 0, "side": -1}
    rows = [base,  # later, nothing before it
            dict(base, flags=4, frag_id=10, cat=3, sport=50000, dport=3478, side=1),
            dict(base, flags=5, cat=2, sport=443, dport=1000, side=0),
            dict(base, cat=7),  # later: takes the row before's info
            dict(base, flags=0, cat=5)]  # no fragment
    cols, todo = _run(match_within.compiled, rows)
    assert todo == [0, 1, 2]
    assert cols["cat"].tolist() == [1, 3, 2, 2, 5]
    assert cols["sport"].tolist() == [0, 50000, 443, 443, 0]
    assert cols["side"].tolist() == [-1, 1, 0, 0, -1]


@settings(max_examples=200, deadline=None)
@given(entries=st.lists(st.tuples(base_key, st.tuples(*[st.integers(-1, 70_000)] * 4)),
                        max_size=40),
       wanted=st.lists(base_key, max_size=20), weak=st.booleans())
@example(entries=[], wanted=[(4, 0, 0, 0, 0, 6, 0)], weak=False)
def test_packed_entries_are_looked_up_as_the_dict(
        entries: list[tuple[tuple[int, ...], tuple[int, int, int, int]]],
        wanted: list[tuple[int, ...]], weak: bool) -> None:
    """Remembered first fragments packed to cross between processes answer lookups as
    the dict does, also when many keys share a digest (``weak``), and unpack to it."""
    from classifier import fragments

    table = dict(entries)
    asked = wanted + [k for k, _ in entries[::3]]
    packed = fragments._pack(table)
    if not table:  # nothing to pack
        assert packed is table
        assert fragments._lookup(packed, asked) == {}
        return
    assert isinstance(packed, fragments._Packed)
    if weak:  # two digests in all: every lookup walks keys that only share one
        packed._sorted = None
        digest = fragments._digest
        fragments._digest = lambda keys: (keys[:, 6] % np.uint64(2)).astype(np.uint64)
        try:
            found = fragments._lookup(packed, asked)
        finally:
            fragments._digest = digest
    else:
        found = fragments._lookup(packed, asked)
    assert found == {k: table[k] for k in asked if k in table}
    assert list(packed.to_dict().items()) == list(table.items())
