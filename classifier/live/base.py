"""What every live source offers, and the interfaces there are to capture on."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from ..errors import O365TrafficError
from ..sources.batch import Batch

__all__ = [
    "CaptureSetupError",
    "Interface",
    "LiveSource",
    "LiveStats",
    "interface_index",
    "list_interfaces",
    "open_failure",
]


class CaptureSetupError(O365TrafficError):
    """A live capture cannot start: no such interface, no privilege, a bad filter."""


@dataclass
class LiveStats:
    """Kernel counters of a capture: packets that passed the filter (dropped ones
    included, as libpcap counts them) and packets dropped for lack of room."""

    received: int = 0
    dropped: int = 0


class LiveSource:
    """Batches of packets from an interface, as the file readers produce them."""

    backend: str
    interface: str
    filter: str | None
    linktype: int
    stats: LiveStats

    def next_batch(self, timeout: float) -> Batch | None:
        """The packets that came (waiting up to ``timeout`` seconds); None if none."""
        raise NotImplementedError

    def kernel_counts(self) -> tuple[int, int]:
        """Received and dropped since the last call."""
        raise NotImplementedError

    def update_stats(self) -> LiveStats:
        """Read the kernel's counters into :attr:`stats`."""
        received, dropped = self.kernel_counts()
        self.stats.received += received
        self.stats.dropped += dropped
        return self.stats

    def close(self) -> None:
        """Release the socket."""


@dataclass(frozen=True)
class Interface:
    """A network interface one can capture on."""

    name: str
    index: int
    kind: str  # ethernet, loopback, none (raw IP), or the ARPHRD_ number
    state: str  # up, down, unknown


_KINDS = {1: "ethernet", 772: "loopback", 65534: "raw-ip", 512: "ppp", 776: "ipv6-in-ipv4"}


def list_interfaces() -> list[Interface]:
    """The interfaces of this network namespace, ``any`` first (Linux)."""
    out = [Interface("any", 0, "cooked (all interfaces)", "up")]
    for index, name in sorted(socket.if_nameindex()):
        out.append(Interface(name, index, _kind(name), _read(name, "operstate") or "unknown"))
    return out


def _kind(name: str) -> str:
    value = _read(name, "type")
    if value is None or not value.isdigit():
        return "unknown"
    return _KINDS.get(int(value), f"arphrd-{value}")


def _read(name: str, attribute: str) -> str | None:
    try:
        with open(os.path.join("/sys/class/net", name, attribute), encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return None


def interface_index(name: str) -> int:
    """The index of an interface; :class:`CaptureSetupError` if there is none."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise CaptureSetupError(
            f"no interface named {name!r} (see 'o365-traffic interfaces')") from None


def open_failure(interface: str) -> CaptureSetupError:
    """The one-line error for a capture opened without the privilege it needs."""
    return CaptureSetupError(
        f"capturing on {interface} needs root or CAP_NET_RAW (run as root: the capture "
        "drops to --user once the socket is open)")
