#!/usr/bin/env python3
"""In-process steady-state rate of ``classifier.analyze`` on one capture.

Imports the package, warms it up on a small generated capture (large enough for the
compiled kernels to be used, so they are loaded or compiled before the clock starts),
then times ``classifier.analyze([CAPTURE])`` from the call to its result with
``time.perf_counter`` and prints one JSON object::

    {"packets": ..., "bytes": ..., "seconds": ..., "packets_per_s": ...,
     "mb_per_s": ..., "file_bytes": ..., "runs": [...]}

``mb_per_s`` is capture-file megabytes (10^6) per second. With ``--repeat N`` the
capture is analysed N times and the best run is reported (every run is in ``runs``).

Usage::

    python benchmarks/steady_state.py CAPTURE... [--repeat 1] [--jobs N]

``--jobs`` (default: the number of cores, as the command) lets one large capture be
split into byte ranges analysed in parallel, or several captures be spread over
processes (then the rate is over all of them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import classifier
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(HERE.parent))
    import classifier

sys.path.insert(0, str(HERE))
from make_mix import build_mix, write_pcap  # noqa: E402


def warm_up(jobs: int) -> float:
    """Analyse a generated capture just above the size at which compiled kernels are
    used; returns the seconds it took (import, load or compile, run)."""
    threshold = 1 << 20
    try:
        from classifier._jit import COMPILE_THRESHOLD

        threshold = COMPILE_THRESHOLD
    except ImportError:
        pass
    packets = max(4000, 2 * threshold // 650)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="o365-warmup-") as tmp:
        path = os.path.join(tmp, "warmup.pcap")
        write_pcap(build_mix(packets, seed=7), path)
        classifier.analyze([path])
    if jobs > 1:
        from classifier.split import find_record
        from classifier.split import warm_up as load_kernels

        find_record.compiled  # noqa: B018 - loads the boundary search
        load_kernels()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("captures", nargs="+", metavar="capture")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs (best reported)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="processes for one capture (default: number of cores)")
    parser.add_argument("--categories-only", action="store_true",
                        help="category totals only (no directions, flows, rates, QoS)")
    parser.add_argument("--interval", help="add a time series with this interval (e.g. 1s)")
    args = parser.parse_args(argv)
    from classifier.measures import parse_duration
    from classifier.pipeline import Options

    options = Options(details=not args.categories_only,
                      interval_ns=parse_duration(args.interval) if args.interval else None)
    warm = warm_up(args.jobs)
    runs = []
    result = None
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        result = classifier.analyze(args.captures, jobs=args.jobs, options=options)
        runs.append(time.perf_counter() - start)
    assert result is not None
    totals = result.totals
    best = min(runs)
    size = sum(os.path.getsize(c) for c in args.captures)
    statuses = sorted({c.status for c in result.captures})
    out = {
        "packets": totals.packets,
        "bytes": totals.bytes,
        "seconds": round(best, 6),
        "packets_per_s": round(totals.packets / best, 1) if best > 0 else None,
        "mb_per_s": round(size / best / 1e6, 2) if best > 0 else None,
        "file_bytes": size,
        "warm_up_seconds": round(warm, 3),
        "runs": [round(r, 6) for r in runs],
        "status": statuses,
        "categories": {k: {"packets": v.packets, "bytes": v.bytes}
                       for k, v in result.categories.items()},
    }
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
