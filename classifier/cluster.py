"""The same tasks on a Dask distributed cluster (the ``dask[distributed]`` extra).

Each capture is one task (a large pcap one task per byte range), submitted to an
existing scheduler; captures must be readable by the workers at the same path. A
worker lost mid-run has its tasks run again elsewhere (Dask's retries); when they run
out, the command fails with one line: never a silently partial total.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from .errors import O365TrafficError
from .lookup import compile_rules
from .result import AnalysisResult
from .rules import RuleSet

__all__ = ["ClusterError", "analyze_cluster"]


class ClusterError(O365TrafficError):
    """The cluster could not be reached, or lost work beyond its retries."""


def _capture_task(path: str, rules: RuleSet, options: Any) -> AnalysisResult:
    from .pipeline import analyze_capture  # resolved on the worker

    return analyze_capture(path, compile_rules(rules), options=options)


def _range_task(path: str, rules: RuleSet, byte_range: tuple[int, int], options: Any) -> Any:
    from .split import _scan_range  # resolved on the worker

    return _scan_range(path, rules, byte_range, options)


def analyze_cluster(
    files: Sequence[str],
    rules: RuleSet,
    scheduler: str,
    *,
    options: Any = None,
    parts: int = 2,
    progress: Callable[[int], None] | None = None,
) -> list[AnalysisResult]:
    """Analyse ``files`` on the Dask scheduler at ``scheduler`` (``tcp://host:port``);
    results in the order of ``files``."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ClusterError(
            "--scheduler needs dask.distributed: pip install 'o365-traffic[cluster]'"
        ) from None
    from .pipeline import Options
    from .split import merge_parts, plan_ranges

    opts = options if isinstance(options, Options) else Options()
    # A range's held flow records cross to the client in its result: a file on the
    # worker's machine would not.
    opts = dataclasses.replace(opts, spill_dir=None)
    if opts.flow_sink is not None:
        raise ClusterError("--flows writes from one process: not with --scheduler")
    try:
        client = Client(scheduler, timeout=10)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"{scheduler}: cannot reach the Dask scheduler ({exc})") from None
    try:
        jobs: list[tuple[int, Any, tuple[int, int] | None]] = []
        for index, path in enumerate(files):
            # Named flows are decided at their start: such rule sets do not split.
            ranges = plan_ranges(path, parts) if path != "-" and not rules.uses_names else None
            if ranges is None:
                fut = client.submit(_capture_task, path, rules, opts, pure=False, retries=2)
                jobs.append((index, fut, None))
            else:
                for r in ranges:
                    fut = client.submit(_range_task, path, rules, r, opts, pure=False,
                                        retries=2)
                    jobs.append((index, fut, r))
        size = {fut: (span[1] - span[0]) if span else _size(files[i]) for i, fut, span in jobs}
        done: dict[Any, Any] = {}
        try:
            for fut in as_completed([f for _, f, _ in jobs]):
                done[fut] = fut.result()
                if progress is not None:
                    progress(size[fut])  # progress as tasks complete
        except Exception as exc:  # KilledWorker, CommClosedError, ...
            raise ClusterError(
                f"{scheduler}: the cluster lost work beyond its retries "
                f"({type(exc).__name__}: {exc}); no partial result is reported") from None
        results: list[AnalysisResult | None] = [None] * len(files)
        split: dict[int, list[tuple[tuple[int, int], Any]]] = {}
        for index, fut, span in jobs:
            if span is None:
                results[index] = done[fut]
            else:
                split.setdefault(index, []).append((span, done[fut]))
        compiled_rules = compile_rules(rules)
        for index, pieces in split.items():
            results[index] = merge_parts(files[index], [r for r, _ in pieces],
                                         [p for _, p in pieces], compiled_rules, opts)
        return [r for r in results if r is not None]
    finally:
        client.close()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
