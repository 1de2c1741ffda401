"""Prometheus metrics of a live capture: counters by category and direction only
(bounded cardinality: no per-flow or per-address labels).

Imported only with metrics (prometheus-client is an optional dependency), and before
root is dropped: the scrapes run in a thread that may no longer read the library's files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..measures import DIRECTIONS
from .session import Snapshot

__all__ = ["serve_metrics"]


class _Collector:
    """Reads the latest snapshot at each scrape."""

    def __init__(self, latest: Callable[[], Snapshot], interface: str) -> None:
        self.latest = latest
        self.interface = interface

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        snap = self.latest()
        packets = CounterMetricFamily(
            "o365_traffic_packets", "Packets counted, by category and direction",
            labels=["category", "direction"])
        wire = CounterMetricFamily(
            "o365_traffic_bytes", "Wire bytes counted, by category and direction",
            labels=["category", "direction"])
        for i, name in enumerate(snap.categories):
            if snap.directions is None:
                packets.add_metric([name, "all"], float(snap.packets[i]))
                wire.add_metric([name, "all"], float(snap.bytes[i]))
                continue
            for j, direction in enumerate(DIRECTIONS):
                packets.add_metric([name, direction], float(snap.directions[i, j, 0]))
                wire.add_metric([name, direction], float(snap.directions[i, j, 1]))
        yield packets
        yield wire
        yield CounterMetricFamily(
            "o365_traffic_kernel_received_packets",
            "Packets the capture filter passed, dropped ones included",
            value=float(snap.received))
        yield CounterMetricFamily(
            "o365_traffic_kernel_dropped_packets",
            "Packets the kernel dropped for lack of room in the capture buffer",
            value=float(snap.dropped))
        yield GaugeMetricFamily(
            "o365_traffic_capture_start_time_seconds",
            "When the capture started, in seconds since the epoch",
            value=snap.start_time)


def serve_metrics(latest: Callable[[], Snapshot], interface: str, *, port: int,
                  bind: str = "127.0.0.1") -> Any:
    """Serve the metrics over HTTP on ``bind:port`` from a background thread; returns
    the server (``shutdown()`` stops it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(latest, interface))
    server, _thread = start_http_server(port, addr=bind, registry=registry)
    return server
