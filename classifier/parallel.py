"""Captures spread over local processes; their results merge exactly."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TYPE_CHECKING

from .lookup import compile_rules
from .result import AnalysisResult
from .rules import RuleSet

if TYPE_CHECKING:
    from .pipeline import Options

__all__ = ["analyze_parallel"]


def _work(path: str, rules: RuleSet, options: Options) -> tuple[AnalysisResult, int]:
    from .pipeline import analyze_capture  # resolved in the worker

    result = analyze_capture(path, compile_rules(rules), options=options)
    size = os.path.getsize(path) if path != "-" and os.path.isfile(path) else 0
    return result, size


def analyze_parallel(
    files: Sequence[str],
    rules: RuleSet,
    *,
    jobs: int,
    progress: Callable[[int], None] | None = None,
    options: Options | None = None,
) -> list[AnalysisResult]:
    """Analyse ``files`` in up to ``jobs`` processes; results in the order of ``files``."""
    # fork: workers inherit the imported modules and compiled kernels instead of
    # importing them again.
    from .split import warm_up

    warm_up()  # workers inherit the loaded kernels instead of each loading them
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    # The largest captures first, so that one big file does not start last.
    order = sorted(range(len(files)), key=lambda i: -_size(files[i]))
    results: list[AnalysisResult | None] = [None] * len(files)
    with ProcessPoolExecutor(max_workers=min(jobs, len(files)), mp_context=ctx) as pool:
        from .pipeline import Options  # the pipeline imports this module lazily

        opts = options or Options()
        futures = {pool.submit(_work, files[i], rules, opts): i for i in order}
        for fut in as_completed(futures):
            result, size = fut.result()
            results[futures[fut]] = result
            if progress is not None:
                progress(size)
    return [r for r in results if r is not None]


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
