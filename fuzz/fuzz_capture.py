"""Coverage-guided fuzzing of the capture path: the fuzz input is a capture file.

Each input is written to a file and read twice: by ``open_capture(compiled=False)``
(the pcap/pcapng record walks, interpreted so that the fuzzer sees their branches)
and by ``analyze_capture`` (decode, classification, fragments, aggregation, the
summary). The oracles are in ``fuzz/checks.py``. ``fuzz/run.py`` runs it with the
right options; run by hand, it takes any libFuzzer option::

    python fuzz/fuzz_capture.py -dict=fuzz/capture.dict -max_total_time=60 \
        fuzz/work/capture/corpus fuzz/corpus/capture
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent


def make_target() -> Callable[[bytes], None]:
    """The fuzz target, with the classifier imported under coverage instrumentation."""
    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["classifier"]):
        import classifier.pipeline  # noqa: F401

    from classifier.errors import O365TrafficError
    from classifier.lookup import compile_rules
    from classifier.rules import load_rules
    from fuzz._harness import cap_memory, guarded
    from fuzz.checks import check_capture, signature

    rules = compile_rules(load_rules())
    shm = Path("/dev/shm")
    path = Path(tempfile.mkdtemp(prefix="fuzz-capture-", dir=shm if shm.is_dir() else None))
    path /= "input.cap"
    cap_memory(int(os.environ.get("FUZZ_MEMORY_MB", "1024")))

    def test_one_input(data: bytes) -> None:
        path.write_bytes(data)
        check_capture(str(path), rules, compiled=False)

    return guarded(test_one_input, (O365TrafficError,), signature)


def main() -> None:
    atheris.Setup(sys.argv, make_target())
    atheris.Fuzz()


if __name__ == "__main__":
    main()
