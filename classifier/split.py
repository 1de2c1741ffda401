"""One large capture split into byte ranges analysed in parallel.

Each range but the first starts at a boundary found by validating a chain: for pcap,
consecutive record headers (plausible lengths and timestamps); for pcapng, blocks
(plausible type, length a multiple of 4 repeated in the trailer, packet blocks that
fit). A pcapng range also starts with the state of its section (byte order,
interfaces), read from the header blocks that open the file. The ranges are analysed
in worker processes and merged in file order: counters add up, and fragments waiting
for their datagram's first fragment find it in the neighbouring range.

Nothing found by a guess changes a result: a range that does not end exactly where
the next one starts means a boundary was wrong, and the capture is analysed again in
one piece; a pcapng range that started with another state than its predecessor ended
with (a section or interface met on the way) is read again with the right one.
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
from .sources.pcap import CHAIN, MAGICS, PcapReader, find_record
from .sources.pcapng import CHAIN as BLOCK_CHAIN
from .sources.pcapng import SHB_TYPE, PcapngReader, find_block, leading_state
from .sources.ranges import ByteRange, RangeReport

__all__ = ["SPLIT_MIN_BYTES", "analyze_split", "find_record", "plan_ranges"]

#: Captures smaller than this are not worth splitting.
SPLIT_MIN_BYTES = 32 << 20
#: Bytes searched for a boundary after a split point.
SEARCH = 4 << 20
#: The largest pcapng block a chain is expected to hold, with room for options.
_BLOCK_MAX = MAX_CAPLEN + 65536


def plan_ranges(path: str, parts: int, *, min_bytes: int | None = None,
                at: Sequence[int] | None = None) -> list[ByteRange] | None:
    """Byte ranges of a pcap or pcapng file, each starting at a record or block; None
    if it cannot be split (compressed, not a capture, or smaller than ``min_bytes``,
    by default :data:`SPLIT_MIN_BYTES`). The ranges start near equal fractions of the
    file, or near the offsets ``at``."""
    if min_bytes is None:
        min_bytes = SPLIT_MIN_BYTES
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError:
        return None
    if parts < 2 or size < min_bytes or len(head) < 24:
        return None
    (magic,) = struct.unpack_from("<I", head, 0)
    points = sorted(at) if at is not None else [size * k // parts for k in range(1, parts)]
    if magic == SHB_TYPE:
        return _plan_pcapng(path, size, points)
    if magic not in MAGICS:
        return None
    big, nanosecond, hdr_len = MAGICS[magic]
    frac_limit = 1_000_000_000 if nanosecond else 1_000_000
    starts = [PcapReader.first_record]
    with open(path, "rb") as fh:
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
    return [ByteRange(a, b) for a, b in zip(starts, [*starts[1:], size], strict=True)]


def _plan_pcapng(path: str, size: int, points: Sequence[int]) -> list[ByteRange] | None:
    lead = leading_state(path)
    if lead is None:
        return None
    state, first = lead
    starts = [PcapngReader.first_record]
    with open(path, "rb") as fh:
        for point in points:
            offset = max(point, starts[-1] + 4, first)
            offset += -offset % 4  # blocks are 4-aligned from the start of the file
            fh.seek(offset)
            window = np.frombuffer(fh.read(SEARCH + BLOCK_CHAIN * _BLOCK_MAX), np.uint8)
            if window.size == 0:
                break
            found = int(find_block.compiled(window, 0, state.big, BLOCK_CHAIN,
                                            len(state.interfaces)))
            if found >= 0 and found < SEARCH and offset + found < size:
                starts.append(offset + found)
    if len(starts) < 2:
        return None
    stops = [*starts[1:], size]
    return [ByteRange(a, b, state if a > 0 else None) for a, b in zip(starts, stops, strict=True)]


def _as_range(path: str, r: tuple[int, int]) -> ByteRange:
    """``r`` as a ByteRange; a pcapng range from mid-file given the file's opening state."""
    if isinstance(r, ByteRange):
        return ByteRange(r.start, r.stop, r.state)  # a fresh report
    state = None
    if r[0] > 0:
        lead = leading_state(path)
        state = lead[0] if lead is not None else None
    return ByteRange(r[0], r[1], state)


def _scan_piece(path: str, compiled_rules: CompiledRules, byte_range: ByteRange,
                options: Any) -> tuple[Any, RangeReport]:
    from .pipeline import scan  # import cycle

    part = scan(path, compiled_rules, byte_range=byte_range, compiled=True, options=options)
    return part, byte_range.report


def _scan_range(path: str, rules: RuleSet, byte_range: tuple[int, int],
                options: object = None) -> tuple[Any, RangeReport]:
    from .pipeline import Options  # resolved in the worker

    assert options is None or isinstance(options, Options)
    part, report = _scan_piece(path, compile_rules(rules), _as_range(path, byte_range),
                               options)
    trim_for_merge(part)
    return part, report


def trim_for_merge(part: Any) -> None:
    """Keep at most half a flow table in a range's part: the merge of two does not grow."""
    table = part.agg.flow_table
    if table is not None and table.count > table.max_flows // 2 and part.agg.last_ts:
        table.make_room(part.agg.last_ts, keep=table.max_flows // 2)


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
    from .pipeline import Options  # import cycle

    opts = options if isinstance(options, Options) else Options()

    # Load the compiled kernels before forking, so that no worker loads them again.
    find_record.compiled  # noqa: B018
    warm_up()
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=len(ranges), mp_context=ctx) as pool:
        futures = [pool.submit(_scan_range, path, rules, r, opts) for r in ranges]
        pieces: list[tuple[Any, RangeReport]] = []
        for fut, (start, stop) in zip(futures, ranges, strict=True):
            pieces.append(fut.result())
            if progress is not None:
                progress(stop - start)
    return merge_parts(path, ranges, pieces, compiled_rules, opts)


def merge_parts(path: str, ranges: Sequence[tuple[int, int]],
                pieces: Sequence[tuple[Any, RangeReport]],
                compiled_rules: CompiledRules, options: Any) -> AnalysisResult:
    """The result of a capture from the parts of its byte ranges, in file order."""
    from .pipeline import analyze_capture, finish  # import cycle

    joined = join_parts(path, ranges, pieces, compiled_rules, options)
    if joined is None:
        # A boundary was not a record boundary after all: read it in one piece.
        return analyze_capture(path, compiled_rules, compiled=True, options=options)
    return finish(joined[0])


def join_parts(path: str, ranges: Sequence[tuple[int, int]],
               pieces: Sequence[tuple[Any, RangeReport]], compiled_rules: CompiledRules,
               options: Any) -> tuple[Any, RangeReport] | None:
    """The parts of neighbouring byte ranges, in file order, as one part (the first
    piece's, which takes in the others) and the last range's report; None if a range
    did not end where the next began (a boundary that was none)."""
    merged, report = pieces[0]
    link_types = set(merged.summary.link_types)
    for (_, stop), (start, later_stop), (part, later) in zip(
            ranges, ranges[1:], pieces[1:], strict=False):
        if merged.summary.status == "corrupt":
            break  # damage stops the reading, as it does in one piece
        if merged.end != stop:
            return None
        state = report.end_state
        if later.start_state is not None and (
                state is None or not state.continues(later.start_state,
                                                     later.depends_on_last_ns)):
            # The range began in another section state than the one before it ended
            # in: read it again from that state, here.
            part, later = _scan_piece(path, compiled_rules,
                                      ByteRange(start, later_stop, state), options)
        merged.absorb(part)
        link_types.update(part.summary.link_types)
        report = later
    merged.summary.link_types = sorted(link_types)
    return merged, report


def warm_up() -> None:
    """Load the compiled record walk, decoder and fragment matching (from numba's cache
    when it has them)."""
    from .decode import Headers, decode_packets
    from .fragments import match_within
    from .sources.pcap import walk_pcap

    buf = np.zeros(64, np.uint8)
    buf.setflags(write=False)  # as a memory-mapped capture is
    z = np.zeros(1, np.int64)
    cols = Headers.empty(1)
    walk_pcap.compiled(buf, 0, 0, False, 1000, 16, MAX_CAPLEN, 1, z + 1, z, z.copy(),
                       z.copy(), z.copy(), *cols.as_tuple())
    decode_packets.compiled(buf, z, z.copy(), z + 1, 0, 1, *cols.as_tuple())
    match_within.compiled(cols.flags, cols.ip, cols.src_hi, cols.src_lo, cols.dst_hi,
                          cols.dst_lo, cols.proto, cols.frag_id, np.zeros(1, np.int32),
                          cols.sport, cols.dport, np.zeros(1, np.int8), z.copy())
