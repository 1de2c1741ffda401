#!/usr/bin/env python3
"""How much two processes side by side slow each other down on this machine.

Two measurements, each over several rounds:

- ``--machine``: three plain numpy workloads (arithmetic on data in cache, random
  reads over 256 MB, sequential reads of 512 MB), one process alone against two at
  once; prints the ratio of work done per unit of time (2.0: no interference).
- ``CAPTURE``: the two byte ranges ``--jobs 2`` would give a capture, each analysed
  alone, then both at once in two forked processes; prints each range's seconds and
  how much longer they took side by side.

Usage::

    python benchmarks/side_by_side.py --machine
    python benchmarks/side_by_side.py /tmp/bench/mix-8m.pcap --rounds 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _cache() -> None:
    a = np.ones(32_000)
    for _ in range(60_000):
        a.sum()


#: The workloads' data, made once before the first fork: forked processes read it
#: without copying, so the timings measure reading, not allocating and zeroing pages.
_DATA: dict[str, np.ndarray] = {}


def _data() -> dict[str, np.ndarray]:
    if not _DATA:
        _DATA["table"] = np.ones(32_000_000)
        _DATA["idx"] = np.random.default_rng(0).integers(0, 32_000_000, 4_000_000)
        _DATA["seq"] = np.ones(64_000_000)
    return _DATA


def _random_reads() -> None:
    d = _data()
    for _ in range(12):
        d["table"][d["idx"]].sum()


def _sequential_reads() -> None:
    a = _data()["seq"]
    for _ in range(8):
        a.sum()


def _together(target: Callable[[], None], k: int) -> float:
    _data()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=target) for _ in range(k)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return time.perf_counter() - start


def machine(rounds: int) -> None:
    for name, work in (("arithmetic on data in cache", _cache),
                       ("random reads over 256 MB", _random_reads),
                       ("sequential reads of 512 MB", _sequential_reads)):
        ratios = sorted(2 * _together(work, 1) / _together(work, 2) for _ in range(rounds))
        print(f"{name}: 2 processes do {ratios[0]:.2f} / {ratios[len(ratios) // 2]:.2f} / "
              f"{ratios[-1]:.2f} (min / median / max) the work of 1")


_STATE: dict[str, Any] = {}


def _one_range(r: Any) -> float:
    from classifier.split import _scan_range

    start = time.perf_counter()
    _scan_range(_STATE["path"], _STATE["rules"], r, _STATE["options"])
    return time.perf_counter() - start


def capture(path: str, rounds: int) -> None:
    from classifier.pipeline import Options
    from classifier.rules import load_rules
    from classifier.split import plan_ranges, warm_up

    ranges = plan_ranges(path, 2)
    if ranges is None:
        raise SystemExit(f"{path}: too small to split")
    _STATE.update(path=path, rules=load_rules(), options=Options())
    warm_up()
    ctx = multiprocessing.get_context("fork")
    for n in range(rounds):
        alone = [_one_range(r) for r in ranges]
        with ctx.Pool(2) as pool:
            both = pool.map(_one_range, ranges)
        print(f"round {n + 1}: alone {alone[0]:.2f} s and {alone[1]:.2f} s; side by side "
              f"{both[0]:.2f} s and {both[1]:.2f} s ({100 * (sum(both) / sum(alone) - 1):+.0f} %)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture", nargs="?")
    parser.add_argument("--machine", action="store_true", help="the plain numpy workloads")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.machine:
        machine(args.rounds)
    if args.capture:
        capture(args.capture, args.rounds)
    if not (args.machine or args.capture):
        parser.error("give --machine or a capture")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
