"""One large pcap capture split into byte ranges analysed in parallel.

Each range but the first starts at a record boundary found by validating a chain of
consecutive record headers (plausible lengths and timestamps). The ranges are analysed
in worker processes and merged in file order: counters add up, and fragments waiting
for their datagram's first fragment find it in the neighbouring range. A range that
does not end exactly where the next one starts means a boundary was wrong: then the
capture is analysed again in one piece, so a split never changes a result.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from .lookup import CompiledRules, compile_rules
from .result import AnalysisResult
from .rules import RuleSet
from .sources.batch import MAX_CAPLEN
from .sources.pcap import CHAIN, MAGICS, find_record

__all__ = ["SPLIT_MIN_BYTES", "analyze_split", "find_record", "plan_ranges"]

#: Captures smaller than this are not worth splitting.
SPLIT_MIN_BYTES = 32 << 20
#: Bytes searched for a boundary after a split point.
SEARCH = 4 << 20
def plan_ranges(path: str, parts: int, *, min_bytes: int = SPLIT_MIN_BYTES,
                at: Sequence[int] | None = None) -> list[tuple[int, int]] | None:
    """Byte ranges of a pcap file, each starting at a record; None if it cannot be
    split (not an uncompressed pcap, or smaller than ``min_bytes``). The ranges start
    near equal fractions of the file, or near the offsets ``at``."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError:
        return None
    if parts < 2 or size < min_bytes or len(head) < 24:
        return None
    (magic,) = struct.unpack_from("<I", head, 0)
    if magic not in MAGICS:
        return None
    big, nanosecond, hdr_len = MAGICS[magic]
    frac_limit = 1_000_000_000 if nanosecond else 1_000_000
    starts = [24]
    with open(path, "rb") as fh:
        points = sorted(at) if at is not None else [size * k // parts for k in range(1, parts)]
        for point in points:
            offset = max(point, starts[-1] + 1)
            fh.seek(offset)
            window = np.frombuffer(fh.read(SEARCH + CHAIN * (MAX_CAPLEN + hdr_len)), np.uint8)
            if window.size == 0:
                break
            found = int(find_record.compiled(window, 0, big, frac_limit, hdr_len, CHAIN))
            if found >= 0 and found < SEARCH:
                starts.append(offset + found)
    if len(starts) < 2:
        return None
    return list(zip(starts, [*starts[1:], size], strict=True))


def _scan_range(path: str, rules: RuleSet, byte_range: tuple[int, int],
                options: object = None) -> object:
    from .pipeline import Options, scan  # resolved in the worker

    assert options is None or isinstance(options, Options)
    part = scan(path, compile_rules(rules), byte_range=byte_range, compiled=True,
                options=options)
    table = part.agg.flow_table
    if table is not None and table.count > table.max_flows // 2 and part.agg.last_ts:
        # Send back at most half a table: the parent merges two without growing.
        table.make_room(part.agg.last_ts, keep=table.max_flows // 2)
    return part


def analyze_split(
    path: str,
    rules: RuleSet,
    compiled_rules: CompiledRules,
    ranges: Sequence[tuple[int, int]],
    *,
    progress: Callable[[int], None] | None = None,
    options: object = None,
) -> AnalysisResult:
    """Analyse ``ranges`` of one capture in parallel processes and merge them."""
    from .pipeline import Options, Part  # import cycle

    opts = options if isinstance(options, Options) else Options()

    # Load the compiled kernels before forking, so that no worker loads them again.
    find_record.compiled  # noqa: B018
    warm_up()
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=len(ranges), mp_context=ctx) as pool:
        futures = [pool.submit(_scan_range, path, rules, r, opts) for r in ranges]
        parts: list[Part] = []
        for fut, (start, stop) in zip(futures, ranges, strict=True):
            part = fut.result()
            assert isinstance(part, Part)
            parts.append(part)
            if progress is not None:
                progress(stop - start)
    return merge_parts(path, ranges, parts, compiled_rules, opts)


def merge_parts(path: str, ranges: Sequence[tuple[int, int]], parts: Sequence[Any],
                compiled_rules: CompiledRules, options: Any) -> AnalysisResult:
    """The result of a capture from the parts of its byte ranges, in file order."""
    from .pipeline import analyze_capture, finish  # import cycle

    merged = parts[0]
    for (_, stop), part in zip(ranges, parts[1:], strict=False):
        if merged.summary.status == "corrupt":
            break  # damage stops the reading, as it does in one piece
        if merged.end != stop:
            # A boundary was not a record boundary after all: read it in one piece.
            return analyze_capture(path, compiled_rules, compiled=True, options=options)
        merged.absorb(part)
    return finish(merged)


def warm_up() -> None:
    """Load the compiled record walk and decoder (from numba's cache when it has them)."""
    from .decode import Headers, decode_packets
    from .sources.pcap import walk_pcap

    buf = np.zeros(64, np.uint8)
    buf.setflags(write=False)  # as a memory-mapped capture is
    z = np.zeros(1, np.int64)
    walk_pcap.compiled(buf, 0, 0, False, 1000, 16, MAX_CAPLEN, 1, z, z.copy(), z.copy(),
                       z.copy())
    cols = Headers.empty(1)
    decode_packets.compiled(buf, z, z.copy(), z + 1, *cols.as_tuple())
