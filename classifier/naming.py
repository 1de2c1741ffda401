"""Server names per flow, for rule sets whose rules name servers.

A packet is *name-sensitive* when some server name could change its category: its
category with every name rule's name condition met differs from its category with
none met. Only those packets' flows are followed, in a dictionary keyed by a hash of
the flow; the rest of the batch stays in numpy.

A flow's name is decided once, then every packet of the flow takes the category that
name gives, so a flow's category never changes mid-flow:

- TCP: at the flow's first payload bytes. A TLS ClientHello's SNI or an HTTP
  request's Host names the flow; the message may span several segments (up to
  :data:`~classifier.names.MAX_HELLO` bytes). Without either, the name from DNS, if
  any.
- UDP: at the flow's first packet, from DNS.
- DNS: answers seen earlier in the capture map addresses to the names asked for
  (the question, then the CNAME chain); a flow to such an address has those names.

The packets a flow sends before its name is decided (the TCP handshake) are held
back and counted, with the decided category, when it is decided: every total sees
them once, in the right category. Held packets are bounded: flows pending longer than
:data:`PENDING_TIMEOUT_NS` of capture time, or beyond :data:`MAX_HELD` packets, are
decided with what is known (DNS, or no name).

Names are learned per capture: a capture's names do not name another capture's flows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .decode import FLAG_LATER_FRAGMENT, FLAG_PORTS, Headers
from .fragments import Packets
from .lookup import Classes, CompiledRules
from .names import MAX_HELLO, NEED_MORE, dns_answers, http_host, tls_sni
from .sources.batch import Batch

__all__ = ["MAX_HELD", "PENDING_TIMEOUT_NS", "Naming"]

#: Packets held back at most while their flows' names are pending.
MAX_HELD = 200_000
#: A flow whose name is still pending after this much capture time is decided.
PENDING_TIMEOUT_NS = 30 * 1_000_000_000
#: Flows remembered with their decided names; the oldest are forgotten first.
MAX_FLOWS = 262_144
#: Addresses remembered from DNS answers; the oldest are forgotten first.
MAX_DNS = 262_144
#: Client segments a ClientHello or request header is gathered from at most.
MAX_SEGMENTS = 8

_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xC2B2AE3D27D4EB4F)
_C3 = np.uint64(0x165667B19E3779F9)


def _mix(hi: np.ndarray, lo: np.ndarray, port: np.ndarray) -> np.ndarray:
    x = hi * _C1
    x ^= lo * _C2
    x ^= x >> np.uint64(29)
    x ^= port.astype(np.uint64) * _C3
    x *= _C1
    x ^= x >> np.uint64(32)
    return x


@dataclass
class _Pending:
    """A flow whose name is not decided yet."""

    first_ts: int
    held: list[tuple[Packets, np.ndarray]] = field(default_factory=list)
    n_held: int = 0
    client: tuple[int, int, int] | None = None  # the end that sent the first payload
    data: bytearray = field(default_factory=bytearray)
    segments: int = 0
    server: int | None = None  # the server end's 128-bit address, for DNS


class Naming:
    """The naming stage of one capture (see the module docstring)."""

    def __init__(self, rules: CompiledRules) -> None:
        self.rules = rules
        #: Server names; flows and packets refer to them by index (0: no name).
        self.names: list[str] = [""]
        self._name_id: dict[str, int] = {}
        # A label is what a decision gives a flow: its name's index and rule bits.
        self._label_bits = np.zeros((16, rules.words), np.uint64)  # label -> rule bits
        self._label_name = np.zeros(16, np.int32)  # label -> name index
        self._n_labels = 1  # label 0: no name
        self._label_of: dict[tuple[str, ...], int] = {(): 0}
        self.compiled = True
        self.decided: dict[int, int] = {}  # flow key -> label
        self.pending: dict[int, _Pending] = {}
        self.dns: dict[int, tuple[str, ...]] = {}
        self.held = 0

    # ---- labels -----------------------------------------------------------------
    def _label(self, names: tuple[str, ...]) -> int:
        label = self._label_of.get(names)
        if label is None:
            bits = np.zeros(self.rules.words, np.uint64)
            for n in names:
                bits |= self.rules.name_bits(n)
            name_id = self._name_id.get(names[0])
            if name_id is None:
                if len(self.names) >= 1_000_000:  # bounded: beyond, flows go unnamed
                    name_id = 0
                else:
                    name_id = self._name_id[names[0]] = len(self.names)
                    self.names.append(names[0])
            label = self._n_labels
            if label == self._label_bits.shape[0]:
                self._label_bits = np.concatenate([self._label_bits, self._label_bits])
                self._label_name = np.concatenate([self._label_name, self._label_name])
            self._label_bits[label] = bits
            self._label_name[label] = name_id
            self._n_labels += 1
            if len(self._label_of) < 1_000_000:
                self._label_of[names] = label
        return label

    # ---- the stage ----------------------------------------------------------------
    def process(self, batch: Batch, h: Headers, *, compiled: bool = True) -> Packets:
        """Classify and name a decoded batch: returns the packets to count now (held
        packets released by this batch first, then this batch's packets not held)."""
        self.compiled = compiled
        classes = self.rules.classes(h, compiled=compiled)
        cat, side, sensitive = self.rules.classify_named(classes)
        p = Packets(h, cat, side, batch.wirelen, batch.caplen, batch.ts)
        ported = (h.flags & (FLAG_PORTS | FLAG_LATER_FRAGMENT)) == FLAG_PORTS
        dns_at = np.flatnonzero(ported & (h.sport == 53) & (h.proto == 17))
        sens = np.flatnonzero(sensitive)
        now = int(p.ts.max()) if len(p) else 0
        released: list[tuple[Packets, int]] = []
        if sens.size == 0:
            for i in dns_at.tolist():
                self._learn_dns(batch, p, i)
            self._expire(now, released)
            return self._released_first(released, p)

        e1 = _mix(h.src_hi[sens], h.src_lo[sens], h.sport[sens])
        e2 = _mix(h.dst_hi[sens], h.dst_lo[sens], h.dport[sens])
        key = np.minimum(e1, e2) * _C2 + np.maximum(e1, e2) * _C3 + h.proto[sens]
        order = np.argsort(key, kind="stable")
        ks = key[order]
        cuts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        bounds = np.r_[cuts, ks.size]
        # Flows already named, looked up all at once; a SYN restarts its flow.
        keys = ks[cuts].tolist()
        sizes = np.diff(bounds)
        firsts = sens[order[cuts]]
        syn = (h.proto[firsts] == 6) & ((h.tcp_flags[firsts] & 0x12) == 0x02)
        known = np.array([self.decided.get(k, -1) for k in keys], np.int64)
        known[syn] = -1
        group_label = known.copy()
        payload: np.ndarray | None = None
        decisions: list[tuple[int, int, int]] = []  # (position in sens, group, key)
        waiting: list[tuple[int, np.ndarray]] = []  # pending flows and their positions
        for g in np.flatnonzero(known < 0).tolist():
            if payload is None:
                payload = self._payload_lengths(batch, p, sens)
            rows = order[bounds[g] : bounds[g + 1]]  # positions in ``sens``, in order
            k = keys[g]
            self.decided.pop(k, None)  # a new connection on a remembered tuple
            pend = self.pending.get(k)
            if pend is None:
                first = int(firsts[g])
                pend = self.pending[k] = _Pending(int(p.ts[first]))
                client_src = int(p.side[first]) != 0
                server_at = (h.dst_hi, h.dst_lo) if client_src else (h.src_hi, h.src_lo)
                pend.server = (int(server_at[0][first]) << 64) | int(server_at[1][first])
            at = self._decide_at(batch, p, sens, rows, payload, pend)
            if at is None:
                waiting.append((k, rows))
            else:
                decisions.append((at, g, k))
        # DNS answers and decisions in capture order: a flow is named by answers
        # seen before the packet that decides it.
        dns_list = dns_at.tolist()
        d = 0
        for at, g, k in sorted(decisions):
            while d < len(dns_list) and dns_list[d] < int(sens[at]):
                self._learn_dns(batch, p, dns_list[d])
                d += 1
            group_label[g] = self._finish_pending(k, released)
        for i in dns_list[d:]:
            self._learn_dns(batch, p, i)
        label = np.empty(sens.size, np.int64)  # per sensitive packet; -1: held
        label[order] = np.repeat(group_label, sizes)
        hold = sens[label < 0]
        if hold.size:
            chunk = p.take(hold)
            where = {int(pos): n for n, pos in enumerate(hold.tolist())}
            for k, rows in waiting:
                pend = self.pending[k]
                mine = np.array([where[int(sens[r])] for r in rows], np.int64)
                pend.held.append((chunk, mine))
                pend.n_held += mine.size
            self.held += hold.size
        ok = np.flatnonzero(label >= 0)
        if ok.size:
            where_ok = sens[ok]
            self._apply(p, where_ok, label[ok], classes.take(where_ok))
        self._expire(now, released)
        if hold.size:
            keep = np.ones(len(p), bool)
            keep[hold] = False
            p = p.take(keep)
        return self._released_first(released, p)

    def _released_first(self, released: list[tuple[Packets, int]], p: Packets) -> Packets:
        """Released packets, classified with their flows' names, then ``p``."""
        if not released:
            return p
        out = Packets.concat([r for r, _ in released])
        labels = np.concatenate([np.full(len(r), lab, np.int64) for r, lab in released])
        self._apply(out, np.arange(len(out)), labels,
                    self.rules.classes(out.h, compiled=self.compiled))
        return Packets.concat([out, p]) if len(p) else out

    def finish(self) -> Packets | None:
        """Decide every pending flow with what is known; their held packets."""
        released: list[tuple[Packets, int]] = []
        for k in list(self.pending):
            self._finish_pending(k, released)
        if not released:
            return None
        first = released[0][0]
        return self._released_first(released, first.take(np.zeros(0, np.int64)))

    # ---- helpers ------------------------------------------------------------------
    def _payload_lengths(self, batch: Batch, p: Packets, sens: np.ndarray) -> np.ndarray:
        """Transport payload bytes on the wire of each sensitive packet (TCP: the IP
        length less the headers; -1 when unknown)."""
        h = p.h
        l4 = h.l4[sens].astype(np.int64)
        cap = p.cap[sens]
        tcp = h.proto[sens] == 6
        doff = np.full(sens.size, 8, np.int64)  # UDP
        has = tcp & (l4 + 13 <= cap)
        at = batch.offset[sens[has]] + l4[has] + 12
        doff[has] = (batch.buf[at].astype(np.int64) >> 4) * 4
        doff[tcp & ~has] = -1
        end = h.ipend[sens].astype(np.int64)
        end = np.where(end >= 0, end, p.wire[sens])
        out: np.ndarray = np.where(doff >= 0, end - l4 - doff, -1)
        return out

    def _decide_at(self, batch: Batch, p: Packets, sens: np.ndarray, rows: np.ndarray,
                   payload: np.ndarray, pend: _Pending) -> int | None:
        """The position (in ``sens``) of the packet that decides the flow's name, or
        None if none in this batch does. Gathers the client's first bytes."""
        h = p.h
        for r in rows.tolist():
            i = int(sens[r])
            if h.proto[i] != 6:
                return int(r)  # UDP: the first packet decides
            n = int(payload[r])
            if n < 0:
                return int(r)  # headers cut: nothing more will be learned
            if n == 0:
                continue
            sender = (int(h.src_hi[i]), int(h.src_lo[i]), int(h.sport[i]))
            if pend.client is None:
                pend.client = sender
                pend.server = (int(h.dst_hi[i]) << 64) | int(h.dst_lo[i])
            elif sender != pend.client:
                return int(r)  # the server answers: the client's message is complete
            start = int(batch.offset[i]) + int(h.l4[i]) + (
                (int(batch.buf[int(batch.offset[i]) + int(h.l4[i]) + 12]) >> 4) * 4)
            got = min(n, int(p.cap[i]) - (start - int(batch.offset[i])))
            room = MAX_HELLO - len(pend.data)
            if got > 0 and room > 0:
                pend.data += batch.buf[start : start + min(got, room)].tobytes()
            pend.segments += 1
            name = tls_sni(bytes(pend.data))
            if name is None:
                name = http_host(bytes(pend.data))
            if name != NEED_MORE or got < n or pend.segments >= MAX_SEGMENTS:
                pend.data = bytearray(name.encode() if name and name != NEED_MORE else b"")
                pend.segments = -1  # decided: data holds the name, if any
                return int(r)
        return None

    def _finish_pending(self, k: int, released: list[tuple[Packets, int]]) -> int:
        """Decide flow ``k``: its label, and its held packets into ``released``."""
        pend = self.pending.pop(k)
        names: tuple[str, ...] = ()
        if pend.segments == -1 and pend.data:
            names = (pend.data.decode(),)
        elif pend.server is not None:
            names = self.dns.get(pend.server, ())
        label = self._label(names)
        if len(self.decided) >= MAX_FLOWS:
            del self.decided[next(iter(self.decided))]
        self.decided[k] = label
        if pend.held:
            parts = [chunk.take(rows) for chunk, rows in pend.held]
            released.append((Packets.concat(parts) if len(parts) > 1 else parts[0], label))
            self.held -= pend.n_held
        return label

    def _apply(self, p: Packets, at: np.ndarray, labels: np.ndarray, classes: Classes,
               ) -> None:
        """Classify the packets at ``at`` (``classes``: theirs) again with their
        labels' names."""
        cat, side = self.rules.reclassify(classes, self._label_bits[labels])
        p.cat[at] = cat
        p.side[at] = side
        p.h.name[at] = self._label_name[labels]

    def _learn_dns(self, batch: Batch, p: Packets, i: int) -> None:
        h = p.h
        start = int(batch.offset[i]) + int(h.l4[i]) + 8
        end = int(batch.offset[i]) + int(p.cap[i])
        if h.ipend[i] >= 0:
            end = min(end, int(batch.offset[i]) + int(h.ipend[i]))
        if end <= start:
            return
        for address, chain in dns_answers(batch.buf[start:end].tobytes()):
            if address in self.dns:
                del self.dns[address]  # the latest answer wins, and is the newest
            elif len(self.dns) >= MAX_DNS:
                del self.dns[next(iter(self.dns))]
            self.dns[address] = chain

    def _expire(self, now: int, released: list[tuple[Packets, int]]) -> None:
        """Decide flows pending too long, and the oldest while too much is held."""
        while self.pending:
            k = next(iter(self.pending))
            if self.pending[k].first_ts >= now - PENDING_TIMEOUT_NS and self.held <= MAX_HELD:
                break
            self._finish_pending(k, released)
