"""Two source trees' ``--jobs 1`` and ``--jobs 2`` times, alternating in one run.

Each round starts a fresh process per tree (``PYTHONPATH`` set to it), which warms
up, then times ``classifier.analyze`` with jobs 1, 2, 1, 2 on the captures. The
machine's speed drifts from minute to minute, so the trees are compared round by
round, in the same minutes, and by their medians over all rounds.

    git worktree add /tmp/before REV && python -m classifier._aot /tmp/before/classifier
    python benchmarks/jobs_ab.py /tmp/before . /tmp/bench/mix-8m.pcap --rounds 6
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

_ROUND = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import classifier
from steady_state import warm_up
warm_up(2)
times = []
for jobs in (1, 2, 1, 2):
    start = time.perf_counter()
    classifier.analyze(sys.argv[2:], jobs=jobs)
    times.append(time.perf_counter() - start)
print(" ".join(f"{t:.4f}" for t in times))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="source tree (its classifier/ with its kernels built)")
    parser.add_argument("after", help="the other source tree")
    parser.add_argument("captures", nargs="+", help="captures or directories")
    parser.add_argument("--rounds", type=int, default=6)
    opts = parser.parse_args()
    bench = str(Path(__file__).resolve().parent)
    trees = {"before": os.path.abspath(opts.before), "after": os.path.abspath(opts.after)}
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in trees}
    for r in range(opts.rounds):
        for name, tree in trees.items():
            env = dict(os.environ, PYTHONPATH=tree)
            proc = subprocess.run([sys.executable, "-c", _ROUND, bench, *opts.captures],
                                  env=env, capture_output=True, text=True, cwd="/",
                                  check=False)
            if proc.returncode != 0:
                sys.exit(f"jobs_ab.py: {name} failed:\n{proc.stderr[-2000:]}")
            t = [float(x) for x in proc.stdout.split()]
            times[name][0].extend(t[0::2])
            times[name][1].extend(t[1::2])
            print(f"round {r + 1} {name}: jobs 1 {t[0]:.2f} {t[2]:.2f}, jobs 2 {t[1]:.2f} "
                  f"{t[3]:.2f} s", file=sys.stderr, flush=True)
    print("| tree | jobs 1 median s | jobs 2 median s | speed-up of the medians |")
    print("|---|---:|---:|---:|")
    for name, (one, two) in times.items():
        a, b = statistics.median(one), statistics.median(two)
        print(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
