"""Captures spread over local processes; their results merge exactly.

The work is cut into tasks of similar size: a capture is one task, or, when it is
large against the whole (one big file among small ones, or fewer files than jobs),
several byte ranges (see :mod:`classifier.split`). The largest tasks start first, so
that no big one starts last while the other processes sit idle.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

from .lookup import compile_rules
from .result import AnalysisResult
from .rules import RuleSet

if TYPE_CHECKING:
    from .pipeline import Options
    from .sources.ranges import ByteRange

__all__ = ["analyze_parallel", "plan_tasks"]

#: Tasks per job aimed at: a little more than one evens out unequal finishing times.
TASKS_PER_JOB = 2


def _work(path: str, rules: RuleSet, options: Options) -> tuple[AnalysisResult, int]:
    from .pipeline import analyze_capture  # resolved in the worker

    result = analyze_capture(path, compile_rules(rules), options=options)
    return result, _size(path)


def plan_tasks(files: Sequence[str], jobs: int, *, split: bool = True,
               ) -> list[tuple[int, ByteRange | None]]:
    """(file index, byte range or None for the whole file) of each task, largest
    first. A capture larger than an even share of the work is split into ranges
    (with ``split``)."""
    from .split import SPLIT_MIN_BYTES, plan_ranges

    sizes = [_size(f) if f != "-" else 0 for f in files]
    share = sum(sizes) / max(1, jobs * TASKS_PER_JOB)
    tasks: list[tuple[int, int, ByteRange | None]] = []  # (size, index, range)
    for index, (path, size) in enumerate(zip(files, sizes, strict=True)):
        big = split and share and size >= SPLIT_MIN_BYTES
        parts = min(jobs, math.ceil(size / share)) if big else 1
        ranges = plan_ranges(path, parts) if parts > 1 else None
        if ranges is None:
            tasks.append((size, index, None))
        else:
            tasks += [(r.stop - r.start, index, r) for r in ranges]
    tasks.sort(key=lambda t: -t[0])
    return [(index, r) for _, index, r in tasks]


def analyze_parallel(
    files: Sequence[str],
    rules: RuleSet,
    *,
    jobs: int,
    progress: Callable[[int], None] | None = None,
    options: Options | None = None,
    tasks: Sequence[tuple[int, ByteRange | None]] | None = None,
) -> list[AnalysisResult]:
    """Analyse ``files`` in up to ``jobs`` processes; results in the order of ``files``.
    ``tasks``: as :func:`plan_tasks` gives them (planned here by default)."""
    from .pipeline import Options  # the pipeline imports this module lazily
    from .split import _scan_range, merge_parts, warm_up

    opts = options or Options()
    if tasks is None:
        tasks = plan_tasks(files, jobs)
    # fork: workers inherit the imported modules and the kernels loaded here instead
    # of importing and loading them again.
    warm_up()
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    results: list[AnalysisResult | None] = [None] * len(files)
    pieces: dict[int, dict[int, Any]] = {}  # file -> range start -> (part, report)
    # No more tasks than jobs (a capture split in as many ranges): this process takes
    # one itself, so that one result less crosses between processes: the last byte
    # range when there is one (a first range holds no flow records back for the
    # merge, so its result is the smaller to send: half, on the 8M-packet mix), else
    # the largest task.
    own: tuple[int, ByteRange | None] | None = None
    if 1 < len(tasks) <= jobs:
        own = tasks[0]
        ranged = [t for t in tasks if t[1] is not None]
        if ranged:
            own = max(ranged, key=lambda t: t[1][0] if t[1] is not None else -1)
    pooled = [t for t in tasks if t is not own]

    def run(index: int, r: ByteRange | None) -> Any:
        if r is None:
            return _work(files[index], rules, opts)
        return _scan_range(files[index], rules, r, opts)

    def done(index: int, r: ByteRange | None, value: Any) -> None:
        if r is None:
            result, size = value
            results[index] = result
        else:
            pieces.setdefault(index, {})[r.start] = value
            size = r.stop - r.start
        if progress is not None:
            progress(size)

    with ProcessPoolExecutor(max_workers=min(jobs, len(pooled)), mp_context=ctx) as pool:
        futures: dict[Future[Any], tuple[int, ByteRange | None]] = {}
        for index, r in pooled:
            fut: Future[Any]
            if r is None:
                fut = pool.submit(_work, files[index], rules, opts)
            else:
                fut = pool.submit(_scan_range, files[index], rules, r, opts)
            futures[fut] = (index, r)
        if own is not None:
            done(*own, run(*own))
        for fut in as_completed(futures):
            done(*futures[fut], fut.result())
    if pieces:
        compiled_rules = compile_rules(rules)
        for index, parts in pieces.items():
            ranges = sorted(r for i, r in tasks if i == index and r is not None)
            results[index] = merge_parts(files[index], ranges,
                                         [parts[r[0]] for r in ranges], compiled_rules, opts)
    return [r for r in results if r is not None]


def _size(path: str) -> int:
    try:
        return os.path.getsize(path) if os.path.isfile(path) else 0
    except OSError:
        return 0
