"""Micro-benchmarks of the pipeline's stages (pytest-benchmark).

Skipped in a normal test run (the project's pytest options include
``--benchmark-skip``, and ``tests/`` is the default test path). Run them with::

    pytest benchmarks/test_micro.py --benchmark-only
    pytest benchmarks/test_micro.py --benchmark-only --benchmark-columns=min,median,ops

Each stage runs over a whole capture generated once per session by
``benchmarks/make_mix.py`` (``MICRO_PACKETS`` packets, 200 000 by default; a full-payload
and a headers-only variant of the same mix) in a temporary directory. Every benchmark
records ``packets`` and ``mpps`` (million packets per second at its fastest round) in
``extra_info`` (shown by ``--benchmark-json``). The compiled kernels are used
throughout; a warm-up round loads or compiles them before timing starts.

Stages: ``compile_rules`` (rule set -> lookup tables), reading batches
(``sources.open_capture``: the record walk, which decodes the headers a run of records
at a time), ``decode.decode_packets`` alone on batches already read, ``CompiledRules.
classify`` on decoded headers, and the whole ``classifier.analyze``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.make_mix import build_mix, write_pcap

classifier = pytest.importorskip("classifier")
sources = pytest.importorskip("classifier.sources")
decode = pytest.importorskip("classifier.decode")
lookup = pytest.importorskip("classifier.lookup")

PACKETS = int(os.environ.get("MICRO_PACKETS", "200000"))
ROUNDS = 5


@pytest.fixture(scope="session")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same mix written twice: full frames and the first 96 bytes of each."""
    where = tmp_path_factory.mktemp("micro")
    cols = build_mix(PACKETS, seed=2015)
    out = {"full": where / "mix-full.pcap", "snap96": where / "mix-96.pcap"}
    write_pcap(cols, out["full"])
    write_pcap(cols, out["snap96"], snaplen=96)
    return out


@pytest.fixture(scope="session")
def rules() -> Any:
    return classifier.load_rules()


def _run(benchmark: Any, fn: Callable[[], Any], packets: int) -> Any:
    result = benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info["packets"] = packets
    fastest = benchmark.stats.stats.min
    if fastest > 0:
        benchmark.extra_info["mpps"] = round(packets / fastest / 1e6, 3)
    return result


def _read(path: Path, **kwargs: Any) -> list[Any]:
    """Every batch of a capture, each with its own copy of the buffer (a batch is only
    valid until the next one is requested)."""
    reader = sources.open_capture(str(path), compiled=True, **kwargs)
    try:
        return [dataclasses.replace(b, buf=b.buf.copy()) for b in reader]
    finally:
        reader.source.close()


def test_compile_rules(benchmark: Any, rules: Any) -> None:
    compiled = benchmark(lookup.compile_rules, rules)
    assert compiled.categories == rules.categories


@pytest.mark.parametrize("variant", ["full", "snap96"])
def test_read_batches(benchmark: Any, captures: dict[str, Path], variant: str) -> None:
    """The record walk, headers decoded on the way: open the capture, yield every batch."""
    path = captures[variant]

    def read() -> int:
        reader = sources.open_capture(str(path), compiled=True)
        try:
            return sum(len(b) for b in reader)
        finally:
            reader.source.close()

    assert _run(benchmark, read, PACKETS) == PACKETS


def test_decode_batch(benchmark: Any, captures: dict[str, Path]) -> None:
    """Header decoding alone, of batches already in memory (the readers do it as they
    walk; this is that part of their work)."""
    batches = [dataclasses.replace(b, headers=None) for b in _read(captures["full"])]

    def run() -> int:
        return sum(len(decode.decode_batch(b, compiled=True)) for b in batches)

    assert _run(benchmark, run, PACKETS) == PACKETS


def test_classify(benchmark: Any, captures: dict[str, Path], rules: Any) -> None:
    """Rule lookup on decoded headers: category id of every packet."""
    compiled = lookup.compile_rules(rules)
    headers = [decode.decode_batch(b, compiled=True) for b in _read(captures["full"])]

    def run() -> int:
        return sum(int(compiled.classify(h).shape[0]) for h in headers)

    assert _run(benchmark, run, PACKETS) == PACKETS


@pytest.mark.parametrize("variant", ["full", "snap96"])
def test_analyze(benchmark: Any, captures: dict[str, Path], rules: Any, variant: str) -> None:
    """The whole library call, from path to result."""
    path = str(captures[variant])
    result = _run(benchmark, lambda: classifier.analyze([path], rules=rules), PACKETS)
    assert result.totals.packets == PACKETS
