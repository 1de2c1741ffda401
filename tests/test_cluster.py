"""A real Dask scheduler and two workers on 127.0.0.1: the same result as one process,
also when a worker is killed mid-run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import classifier
import classifier.split
from classifier.cluster import ClusterError
from classifier.split import plan_ranges
from tests.test_split import long_pcapng_bytes

pytest.importorskip("distributed")
DASK = shutil.which("dask")
pytestmark = pytest.mark.skipif(DASK is None, reason="the dask command is not installed")
ROOT = Path(__file__).resolve().parent.parent


def _start(*args: str) -> subprocess.Popen[bytes]:
    assert DASK is not None
    return subprocess.Popen([DASK, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    from distributed import Client

    tmp = tmp_path_factory.mktemp("dask")
    info = tmp / "scheduler.json"
    procs = [_start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                    "--scheduler-file", str(info))]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        workers = [_start("worker", "--scheduler-file", str(info), "--nworkers", "1",
                          "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1")
                   for _ in range(2)]
        procs += workers
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=120)
        yield {"address": address, "workers": workers}
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _captures(pcaps_dir: Path, tmp_path: Path, copies: int) -> list[str]:
    names = ["office365-mix.pcap", "ipv4.pcap", "ipv6.pcap", "multi-section.pcapng",
             "office365-mix.pcapng.gz"]
    out = []
    for k in range(copies):
        for name in names:
            dst = tmp_path / f"{k}-{name}"
            dst.write_bytes((pcaps_dir / name).read_bytes())
            out.append(str(dst))
    return out


def test_cluster_result_equals_one_process(cluster: dict[str, object], pcaps_dir: Path,
                                           tmp_path: Path) -> None:
    files = _captures(pcaps_dir, tmp_path, 2)
    local = classifier.analyze(files).to_dict()
    remote = classifier.analyze(files, scheduler=str(cluster["address"])).to_dict()
    assert remote == local


def test_cluster_splits_pcap_and_pcapng_exactly(cluster: dict[str, object], pcaps_dir: Path,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classifier.split, "SPLIT_MIN_BYTES", 0)
    ng = tmp_path / "long.pcapng"
    ng.write_bytes(long_pcapng_bytes(pcaps_dir))
    pcap = tmp_path / "mix.pcap"
    pcap.write_bytes((pcaps_dir / "office365-mix.pcap").read_bytes())
    for path in (ng, pcap):
        ranges = plan_ranges(str(path), 3)
        assert ranges is not None and len(ranges) == 3  # three tasks for one capture
        local = classifier.analyze(str(path), jobs=1).to_dict()
        remote = classifier.analyze(str(path), jobs=3, scheduler=str(cluster["address"]))
        assert remote.to_dict() == local


def test_a_worker_killed_mid_run_changes_nothing(cluster: dict[str, object],
                                                pcaps_dir: Path, tmp_path: Path) -> None:
    files = _captures(pcaps_dir, tmp_path, 24)
    local = classifier.analyze(files).to_dict()
    got: dict[str, object] = {}
    completed: list[int] = []
    started = threading.Event()

    def progress(nbytes: int) -> None:
        completed.append(nbytes)
        if len(completed) == 5:  # the run is under way: 115 tasks to go
            started.set()

    def run() -> None:
        got["doc"] = classifier.analyze(files, scheduler=str(cluster["address"]),
                                        progress=progress).to_dict()

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(timeout=120)
    workers = cluster["workers"]
    assert isinstance(workers, list)
    still_running = thread.is_alive()
    _stop(workers[0])
    thread.join(timeout=300)
    assert still_running  # the worker died mid-run, not after it
    assert got["doc"] == local


def test_an_unreachable_scheduler_is_one_clear_error(pcaps_dir: Path) -> None:
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler"):
        classifier.analyze(str(pcaps_dir / "office365-mix.pcap"),
                           scheduler="tcp://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-m", "classifier", "analyze", "--scheduler",
                           "tcp://127.0.0.1:9", str(pcaps_dir / "office365-mix.pcap")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cannot reach the Dask scheduler" in proc.stderr
