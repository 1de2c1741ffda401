"""What both atheris harnesses share: the command line, and findings already known.

A run of ``fuzz/run.py`` restarts a harness after each finding, naming the findings
so far in the file ``$FUZZ_KNOWN``: an input that fails the same way again is then
passed over, and the fuzzer goes on looking for new ones.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable

#: Printed on stderr in front of a failure's signature; fuzz/run.py reads it.
MARK = "FUZZ-FINDING "


def cap_memory(extra_mb: int) -> None:
    """Let the process map only ``extra_mb`` more than it has now: an allocation past
    that fails with :class:`MemoryError`, which the oracles see and name, instead of the
    process being killed for its size (which says nothing about where)."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        pages = int(fh.read().split()[0])
    limit = pages * resource.getpagesize() + extra_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def known_signatures() -> frozenset[str]:
    """Signatures of the findings this run already has (``$FUZZ_KNOWN``, one a line)."""
    name = os.environ.get("FUZZ_KNOWN")
    if not name or not os.path.exists(name):
        return frozenset()
    with open(name, encoding="utf-8") as fh:
        return frozenset(line.strip() for line in fh if line.strip())


def guarded(test: Callable[[bytes], None], allowed: tuple[type[BaseException], ...],
            signature: Callable[[BaseException], str]) -> Callable[[bytes], None]:
    """``test`` as a fuzz target: ``allowed`` exceptions and known findings pass;
    any other failure prints its signature and propagates (a crash for libFuzzer)."""
    known = known_signatures()

    def target(data: bytes) -> None:
        try:
            test(data)
        except allowed:
            return
        except Exception as exc:
            sig = signature(exc)
            if sig in known:
                return
            print(f"\n{MARK}{sig}", file=sys.stderr, flush=True)
            raise

    return target
