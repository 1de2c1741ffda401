"""Kernels compiled ahead of time: built by the install, used only for the sources and
argument types they were built for, and giving the same answers as numba's
just-in-time compiler."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

import classifier
from classifier import _jit
from classifier._aot import KERNELS, kernel_of, numba_type
from classifier._jit import (
    Kernel,
    _accepts,
    _Dispatch,
    arg_key,
    export_prefix,
    fingerprint,
    slot_key,
)

ROOT = Path(__file__).resolve().parents[1]
REBUILD = "rebuild it with `python -m classifier._aot` (or `pip install -e .`)"


def _package_kernels() -> dict[str, Kernel]:
    found: dict[str, Kernel] = {}
    for info in pkgutil.walk_packages(classifier.__path__, "classifier."):
        if info.name in ("classifier._kernels", "classifier.__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, Kernel) and value.py.__module__ == info.name:
                found[f"{info.name}:{name}"] = value
    return found


def test_every_kernel_called_from_python_is_in_the_table() -> None:
    kernels = _package_kernels()
    outer = {ref for ref, k in kernels.items() if not k.inline}
    assert outer == set(KERNELS)
    for ref, params in KERNELS.items():
        k = kernel_of(ref)
        assert len(params) == k.py.__code__.co_argcount, ref
        for p in params:
            numba_type(p)  # every parameter type is one the build can spell


def test_the_installed_module_has_every_kernel_of_the_running_sources() -> None:
    try:
        module = importlib.import_module(_jit.AOT_MODULE)
    except ImportError:
        pytest.fail(f"{_jit.AOT_MODULE} is not built: {REBUILD}")
    names = dir(module)
    stale = [ref for ref in KERNELS
             if not any(n.startswith(export_prefix(kernel_of(ref))) for n in names)]
    assert not stale, f"built from other sources: {stale}; {REBUILD}"


_RUN_WITHOUT_NUMBA = r"""
import json, sys
import classifier
from classifier import split
from classifier.live import warm_up
from classifier.lookup import compile_rules
from classifier.pipeline import Options

for rules in ("rules/office365-2015.toml", "rules/office365-services.toml",
              "rules/teams.toml"):
    classifier.analyze(sys.argv[1:], rules=rules)
for path in sys.argv[1:]:  # the record and block boundary searches
    if path.endswith(("office365-mix.pcap", "office365-mix.pcapng")):
        assert split.plan_ranges(path, 2, min_bytes=0) is not None
warm_up(compile_rules(classifier.load_rules("rules/office365-2015.toml")), Options())
print(json.dumps({"numba": "numba" in sys.modules}))
"""


def _samples() -> list[str]:
    return sorted(str(p) for p in (ROOT / "pcaps").iterdir()
                  if p.suffix in (".pcap", ".pcapng", ".gz")
                  and p.stem not in ("not-a-capture", "empty", "corrupt-record"))


def test_the_pipeline_runs_on_the_built_kernels_without_numba() -> None:
    """Every compiled call of a run (record walks of both formats, decoding, names,
    prefixes, flows, boundary searches, live capture) finds an export of its exact
    argument types, so numba is never imported."""
    pytest.importorskip(_jit.AOT_MODULE, reason=f"not built: {REBUILD}")
    env = dict(os.environ, O365_TRAFFIC_COMPILE_THRESHOLD="0")
    proc = subprocess.run([sys.executable, "-c", _RUN_WITHOUT_NUMBA, *_samples()],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == {"numba": False}


def _analyze_json(aot: str, *args: str) -> object:
    env = dict(os.environ, O365_TRAFFIC_COMPILE_THRESHOLD="0", O365_TRAFFIC_AOT=aot)
    proc = subprocess.run([sys.executable, "-m", "classifier", "analyze", *args,
                           "--format", "json", "--jobs", "1", "-q"],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("rules", ["rules/office365-2015.toml",
                                   "rules/office365-services.toml"])
def test_ahead_of_time_and_just_in_time_kernels_agree(rules: str) -> None:
    pytest.importorskip(_jit.AOT_MODULE, reason=f"not built: {REBUILD}")
    args = [*_samples(), "--rules", rules]
    assert _analyze_json("1", *args) == _analyze_json("0", *args)



def test_the_built_kernels_release_the_gil_while_they_run() -> None:
    """As the just-in-time kernels do (nogil): a process pool's thread takes in a
    worker's result while the main thread runs a kernel."""
    pytest.importorskip(_jit.AOT_MODULE, reason=f"not built: {REBUILD}")
    from classifier.sources.pcap import find_record

    export = find_record.compiled
    assert isinstance(export, _Dispatch)  # the built module's, not numba's
    buf = np.full(64 << 20, 0xFF, np.uint8)  # no plausible record anywhere: a long search
    buf.setflags(write=False)
    span: list[float] = []

    def search() -> None:
        span.append(time.perf_counter())
        assert export(buf, 0, False, 1_000_000, 16, 4) == -1
        span.append(time.perf_counter())

    ticks: list[float] = []
    thread = threading.Thread(target=search)
    thread.start()
    while thread.is_alive():
        ticks.append(time.perf_counter())
    thread.join()
    start, stop = span
    assert stop - start > 0.02
    # Holding the GIL, the search would stop this thread for all of its run (it may
    # tick only while the other runs the Python code that calls the kernel).
    inside = [start, *(t for t in ticks if start < t < stop), stop]
    assert max(np.diff(inside)) < (stop - start) / 2

# -- choosing an export -----------------------------------------------------------


def test_argument_keys() -> None:
    ro = np.zeros(4, np.uint8)
    ro.setflags(write=False)
    assert arg_key(ro) == slot_key("uint81cr")
    assert arg_key(np.zeros((2, 3), np.int64)) == slot_key("int642cw")
    assert arg_key(np.zeros(8, np.int32)[::2]) == slot_key("int321aw")
    assert arg_key(np.zeros(2, bool)) == slot_key("bool1cw")
    assert [arg_key(v) for v in (True, np.bool_(False), 3, np.uint16(3), 2.5)] == \
        [slot_key(k) for k in "bbiif"]
    assert arg_key(None) is None and arg_key((1, 2)) is None
    assert arg_key(np.zeros(2, ">i8")) is None  # another byte order: not the exports'
    unaligned = np.frombuffer(bytes(17), np.uint8)[1:].view(np.int64)
    assert not unaligned.flags.aligned and arg_key(unaligned) is None
    f_order = np.zeros((3, 2), np.int32, order="F")
    f_order.setflags(write=False)
    assert arg_key(f_order) == slot_key("int322ar")
    assert arg_key(np.zeros((1, 4), np.uint16)[:, ::2]) == slot_key("uint162aw")
    keys = [slot_key(f"{t}{n}{c}{w}") for t in ("uint8", "int8", "int64", "uint64", "bool")
            for n in (1, 2) for c in "ca" for w in "wr"]
    assert len(set(keys)) == len(keys) and min(keys) >= 0


@pytest.mark.parametrize(("slot", "key", "ok"), [
    ("uint81cr", "uint81cr", True), ("uint81cr", "uint81cw", True),   # reads a writable
    ("uint81cw", "uint81cr", False),                                  # never writes a read-only
    ("int641aw", "int641cw", True), ("int641cw", "int641aw", False),  # layouts
    ("int641cw", "uint641cw", False), ("int641cw", "int642cw", False),
    ("i", "i", True), ("i", "b", False), ("b", "i", False), ("i", "int641cw", False),
    ("uint81cr", None, False),
])
def test_a_slot_takes_only_what_the_export_can_read(slot: str, key: str | None,
                                                     ok: bool) -> None:
    assert _accepts(slot_key(slot), None if key is None else slot_key(key)) is ok


def _toy_kernel(source: str, where: Path | None = None) -> Kernel:
    """A kernel made from ``source``; written to a file in ``where`` when it is to be
    compiled (numba caches by source file)."""
    filename = "toy.py"
    if where is not None:
        path = where / f"toy_{abs(hash(source))}.py"
        path.write_text(source)
        filename = str(path)
    glb: dict[str, object] = {"__name__": "toy", "kernel": _jit.kernel, "np": np}
    exec(compile(source, filename, "exec"), glb)
    k = glb["total"]
    assert isinstance(k, Kernel)
    return k


TOY = """
STEP = {step}

@kernel(inline=True)
def part(a, i):
    return a[i] * {scale}

@kernel
def total(a, n):
    s = 0
    for i in range(0, n, STEP):
        s += part(a, i)
    return s
"""


def test_the_fingerprint_follows_the_code_its_constants_and_its_callees() -> None:
    base = fingerprint(_toy_kernel(TOY.format(step=1, scale=1)))
    assert base == fingerprint(_toy_kernel(TOY.format(step=1, scale=1)))
    assert base != fingerprint(_toy_kernel(TOY.format(step=2, scale=1)))  # a constant
    assert base != fingerprint(_toy_kernel(TOY.format(step=1, scale=2)))  # a callee
    assert base != fingerprint(_toy_kernel(TOY.format(step=1, scale=1).replace("s += ", "s -= ")))


def test_calls_the_export_for_matching_types_and_numba_otherwise(tmp_path: Path) -> None:
    k = _toy_kernel(TOY.format(step=1, scale=1), tmp_path)
    calls: list[str] = []

    def export(a: np.ndarray, n: int) -> int:
        calls.append("export")
        return -1

    d = _Dispatch(k, [(("int641cw", "i"), export)])
    a = np.arange(5, dtype=np.int64)
    assert d(a, 5) == -1 and calls == ["export"]
    assert d(a.astype(np.int32), 5) == 10      # another dtype: numba, right answer
    assert d(a[::2].copy(), 3) == -1           # a copy is contiguous again
    assert d(a[::2], 3) == 6                   # strided: numba
    ro = a.copy()
    ro.setflags(write=False)
    assert d(ro, 5) == 10                      # read-only where a writable is wanted
    assert d(a + 1, True) == 1                 # a flag where an integer is wanted
    assert calls == ["export", "export"]


def test_without_a_module_the_kernel_is_numba_s(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    k = _toy_kernel(TOY.format(step=1, scale=1), tmp_path)
    monkeypatch.setattr(_jit, "_aot_module", None)
    assert k.compiled is k.jit
    assert k.compiled(np.arange(4, dtype=np.int64), 4) == 6


def test_a_module_from_other_sources_is_not_used(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    k = _toy_kernel(TOY.format(step=1, scale=1), tmp_path)
    other = _toy_kernel(TOY.format(step=3, scale=1))
    stale = types.ModuleType("stale")
    setattr(stale, export_prefix(other) + "int641cw_i", lambda a, n: -1)
    monkeypatch.setattr(_jit, "_aot_module", stale)
    assert k.compiled is k.jit
    fresh = types.ModuleType("fresh")
    setattr(fresh, export_prefix(k) + "int641cw_i", lambda a, n: -1)
    monkeypatch.setattr(_jit, "_aot_module", fresh)
    k2 = _toy_kernel(TOY.format(step=1, scale=1))
    assert isinstance(k2.compiled, _Dispatch)
    assert k2.compiled(np.arange(4, dtype=np.int64), 4) == -1
