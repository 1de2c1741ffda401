"""Top flows and top talkers, gathered from flow records in bounded memory.

:class:`TopFlows` sees every flow record once (as ``Options.flow_digest``, one per
capture or byte range, or as a ``flow_sink``), keeps the ``top`` largest flows, and per
host address the bytes it sent and received. Hosts are bounded too: past
``max_hosts`` the smaller half is dropped (counted in ``pruned``, and the report says
the talker list is then approximate). Two collectors merge with ``+``: the top flows
of the union are the top of the tops, and per-host totals add up, so the parts of a
parallel or cluster run combine exactly as their results do.

Every string kept here (addresses, server names) is stored as it came from the
capture; escaping is the renderers' job.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..flows import Flows, flow_columns

__all__ = ["Talker", "TopFlows"]

#: Flow-record columns that may carry the server's name (TLS SNI, DNS), when present.
NAME_COLUMNS = ("server_name", "sni", "name")


@dataclass
class Talker:
    """One host: bytes it sent and received, flows it took part in, a name if known."""

    sent: int = 0
    received: int = 0
    flows: int = 0
    name: str | None = None

    @property
    def bytes(self) -> int:
        return self.sent + self.received


def _flow_key(row: Mapping[str, Any]) -> tuple[int, str, int, str, int, float]:
    """Largest first; ties in a fixed order so that results do not depend on chunking."""
    return (-int(row["bytes"]), str(row["client_addr"]), int(row["client_port"]),
            str(row["server_addr"]), int(row["server_port"]), float(row["first_ts"]))


@dataclass
class TopFlows:
    """A flow sink keeping the largest flows and the per-host totals."""

    categories: tuple[str, ...]
    top: int = 20
    max_hosts: int = 100_000
    flows: list[dict[str, Any]] = field(default_factory=list)
    hosts: dict[str, Talker] = field(default_factory=dict)
    records: int = 0
    pruned: int = 0

    def __call__(self, flows: Flows) -> None:
        if len(flows):
            self.add_columns(flow_columns(flows, self.categories))

    def add_columns(self, cols: Mapping[str, Sequence[Any]]) -> None:
        """Take flow records as named columns (the columns of ``FLOW_COLUMNS``, and a
        server-name column when the records carry one)."""
        n = len(cols["protocol"])
        if not n:
            return
        self.records += n
        names: Sequence[Any] = next(
            (cols[c] for c in NAME_COLUMNS if c in cols), [None] * n)
        up, down = cols["bytes_up"], cols["bytes_down"]
        clients, servers = cols["client_addr"], cols["server_addr"]
        totals = [0] * n
        for i in range(n):
            name = names[i]
            name = str(name) if name not in (None, "") else None
            client, server = str(clients[i]), str(servers[i])
            b_up, b_down = int(up[i]), int(down[i])
            totals[i] = b_up + b_down
            for addr, sent, received, host_name in ((client, b_up, b_down, None),
                                                    (server, b_down, b_up, name)):
                t = self.hosts.get(addr)
                if t is None:
                    t = self.hosts[addr] = Talker()
                t.sent += sent
                t.received += received
                t.flows += 1
                if host_name is not None:
                    t.name = host_name
        # Records only for this chunk's candidates, in the order _flow_key gives.
        best = heapq.nsmallest(self.top, range(n), key=lambda i: (
            -totals[i], str(clients[i]), int(cols["client_port"][i]), str(servers[i]),
            int(cols["server_port"][i]), float(cols["first_ts"][i])))
        rows = []
        for i in best:
            name = names[i]
            rows.append({
                "protocol": int(cols["protocol"][i]),
                "client_addr": str(clients[i]), "client_port": int(cols["client_port"][i]),
                "server_addr": str(servers[i]), "server_port": int(cols["server_port"][i]),
                "server_name": str(name) if name not in (None, "") else None,
                "category": str(cols["category"][i]),
                "first_ts": float(cols["first_ts"][i]), "last_ts": float(cols["last_ts"][i]),
                "packets": int(cols["packets_up"][i]) + int(cols["packets_down"][i]),
                "bytes_up": int(up[i]), "bytes_down": int(down[i]), "bytes": totals[i],
            })
        self.flows = heapq.nsmallest(self.top, [*self.flows, *rows], key=_flow_key)
        if len(self.hosts) > self.max_hosts:
            self._prune()

    def _prune(self) -> None:
        keep = self.max_hosts // 2
        ranked = sorted(self.hosts.items(), key=lambda kv: (-kv[1].bytes, kv[0]))
        self.pruned += len(ranked) - keep
        self.hosts = dict(ranked[:keep])

    def talkers(self, n: int | None = None) -> list[tuple[str, Talker]]:
        """The hosts that moved the most bytes, largest first."""
        ranked = sorted(self.hosts.items(), key=lambda kv: (-kv[1].bytes, kv[0]))
        return ranked[: self.top if n is None else n]

    def __add__(self, other: TopFlows) -> TopFlows:
        out = TopFlows(self.categories, top=max(self.top, other.top),
                       max_hosts=max(self.max_hosts, other.max_hosts))
        out.flows = heapq.nsmallest(out.top, [*self.flows, *other.flows], key=_flow_key)
        for src in (self, other):
            for addr, t in src.hosts.items():
                mine = out.hosts.setdefault(addr, Talker())
                mine.sent += t.sent
                mine.received += t.received
                mine.flows += t.flows
                mine.name = t.name or mine.name
        out.records = self.records + other.records
        out.pruned = self.pruned + other.pruned
        if len(out.hosts) > out.max_hosts:
            out._prune()
        return out
