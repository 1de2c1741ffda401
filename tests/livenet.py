"""A network namespace with a veth pair, for live-capture tests.

Packets replayed with tcpreplay into the outer end arrive, every one of them, at the
end inside the namespace, provided both ends take jumbo frames and IPv6 is off (else
the kernel adds neighbour discovery of its own).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The first run compiles the kernels, which takes a while on a shared machine.
STARTUP_S = 600.0


def skip_reason() -> str | None:
    """Why live tests cannot run here, or None."""
    if sys.platform != "linux":
        return "live capture needs Linux"
    if os.geteuid() != 0:
        return "needs root (network namespaces, packet sockets)"
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (Debian: iproute2, tcpreplay)"
    return None


@dataclass
class VethPair:
    ns: str
    outer: str  # replayed into, in this namespace
    inner: str  # captured on, inside ``ns``

    def replay(self, capture: Path | str, pps: int = 2000) -> None:
        """Send every packet of ``capture`` into the outer end at ``pps`` packets/s."""
        subprocess.run(["tcpreplay", "-q", "-i", self.outer, "--pps", str(pps), str(capture)],
                       check=True, capture_output=True)

    def exec(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]


_SERIAL = itertools.count()


def _no_ipv6(interface: str, prefix: list[str]) -> None:
    """No IPv6 on an interface (when the kernel has IPv6 at all)."""
    path = f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6"
    subprocess.run([*prefix, "sh", "-c", f"test ! -e {path} || echo 1 > {path}"],
                   check=True, capture_output=True)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="module")
def veth() -> Iterator[VethPair]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid() % 100000}{next(_SERIAL)}"
    pair = VethPair(f"o365live{tag}", f"o3a{tag}", f"o3b{tag}")
    made = subprocess.run(["ip", "netns", "add", pair.ns], capture_output=True, text=True,
                          check=False)
    if made.returncode != 0:  # e.g. a container without CAP_SYS_ADMIN
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        _run("ip", "link", "add", pair.outer, "mtu", "9000", "type", "veth", "peer", "name",
             pair.inner, "mtu", "9000")
        _run("ip", "link", "set", pair.inner, "netns", pair.ns)
        _no_ipv6(pair.outer, [])
        _no_ipv6(pair.inner, pair.exec())
        _run("ip", "link", "set", pair.outer, "up")
        _run(*pair.exec("ip", "link", "set", pair.inner, "up"))
        _run(*pair.exec("ip", "link", "set", "lo", "up"))
        yield pair
    finally:
        subprocess.run(["ip", "link", "del", pair.outer], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", pair.ns], capture_output=True, check=False)


class Sniffer:
    """``o365-traffic sniff`` running inside the namespace (JSON output)."""

    def __init__(self, pair: VethPair, tmp: Path, *args: str, interface: str | None = None):
        self.pair = pair
        self.err_path = tmp / "sniff.err"
        self.out_path = tmp / "sniff.json"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = pair.exec(sys.executable, "-m", "classifier", "sniff", "-i",
                         interface or pair.inner, "--format", "json", *args)
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=ROOT)
        self._wait_ready()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while "capturing on" not in self.stderr:
            if self.proc.poll() is not None:
                raise AssertionError(f"sniff exited early ({self.proc.returncode}): "
                                     f"{self.stderr}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("sniff did not start")
            time.sleep(0.1)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def result(self, timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
        """Exit code and the JSON document printed."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"sniff did not stop: {self.stderr}") from None
        text = self.out_path.read_text()
        return code, json.loads(text) if text else {}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def analyze_json(*captures: Path | str) -> dict[str, Any]:
    """``o365-traffic analyze --format json`` of captures."""
    proc = subprocess.run([sys.executable, "-m", "classifier", "analyze", "-q", "--format",
                           "json", *map(str, captures)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc
