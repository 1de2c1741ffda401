"""Server names per flow, for rule sets whose rules name servers.

A packet is *name-sensitive* when some server name could change its category: its
category with every name rule's name condition met differs from its category with
none met. Only those packets' flows are followed, in a compiled hash table of flows;
Python sees a flow's first payload only when it may begin a ClientHello or a request,
and DNS answers.

A flow's name is decided once, then every packet of the flow takes the category that
name gives, so a flow's category never changes mid-flow:

- TCP: at the flow's first payload bytes. A TLS ClientHello's SNI or an HTTP
  request's Host names the flow; the message may span several segments (up to
  :data:`~classifier.names.MAX_HELLO` bytes). Without either, the name from DNS, if
  any.
- UDP: at the flow's first packet, from DNS.
- DNS: answers seen earlier in the capture map addresses to the names asked for
  (the question, then the CNAME chain); a flow to such an address has those names.
- Signatures, when a rule asks for one: the flow's first payload (UDP: its first
  packet; TCP: its first payload bytes) is checked for it too. ``ms-stun``: a STUN
  message with an attribute of Microsoft's ICE/TURN extensions
  (:func:`~classifier.names.ms_stun`). A flow whose capture begins mid-call starts with
  media, not STUN, and has no signature.

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

from ._jit import kernel
from .decode import FLAG_FIRST_FRAGMENT, FLAG_LATER_FRAGMENT, FLAG_PORTS, Headers
from .flows import add_flow, find_flow, place_flows
from .fragments import Packets
from .lookup import Classes, CompiledRules
from .names import MAX_HELLO, NEED_MORE, dns_answers, http_host, ms_stun, tls_sni
from .sources.batch import Batch

__all__ = ["MAX_HELD", "PENDING_TIMEOUT_NS", "Naming"]

#: Packets held back at most while their flows' names are pending.
MAX_HELD = 200_000
#: A flow whose name is still pending after this much capture time is decided.
PENDING_TIMEOUT_NS = 30 * 1_000_000_000
#: Flows remembered with their decided names; the oldest are forgotten first.
MAX_FLOWS = 262_144
#: Rows of the flow table at first (it grows up to MAX_FLOWS).
INITIAL_FLOWS = 4_096
#: Addresses remembered from DNS answers; the oldest are forgotten first.
MAX_DNS = 262_144
#: Client segments a ClientHello or request header is gathered from at most.
MAX_SEGMENTS = 8

#: First payload bytes worth parsing: a TLS handshake record, an HTTP method's initial.
_OPENERS = np.zeros(256, np.bool_)
_OPENERS[np.frombuffer(b"\x16GPHDOCT", np.uint8)] = True
#: With the ms-stun signature, also the first byte of an RFC 4571 frame length (STUN
#: over TCP; messages up to 1,535 bytes).
_OPENERS_STUN = _OPENERS.copy()
_OPENERS_STUN[:6] = True


@kernel
def follow_flows(buf, proto, src_hi, src_lo, dst_hi, dst_lo, sport, dport, tcp_flags, at,  # type: ignore[no-untyped-def]
                 offset, l4, cap, ipend, wire, ts, slots, keys, state, seen, offered, stamp,
                 count, out_label, out_row, out_payload, cand):
    """Find or add the flow of each packet ``at[j]`` in the open-addressing table
    (``keys`` as in :mod:`classifier.flows`, ``state`` -1 pending or a label, ``seen``
    the last time); ``out_label[j]`` its state, ``out_row[j]`` its row,
    ``out_payload[j]`` its transport payload bytes on the wire for a pending flow
    (TCP: the IP length less the headers, the header length read from ``buf``; -1
    when unknown, and for decided flows), and the
    positions ``j`` of pending flows' packets that offer a name (payload, or UDP)
    listed in ``cand``: the first per flow in this batch (``offered`` holds the
    ``stamp`` of the batch that last listed one).
    A TCP SYN on a named flow starts a new connection: pending
    again. Returns ``(count, candidates, stop)``: stop is -1, or the position at which
    the table filled up."""
    capacity = keys.shape[0]
    nc = 0
    for j in range(at.shape[0]):
        i = at[j]
        pr = np.int64(proto[i])
        row, h, _, a_hi, a_lo, b_hi, b_lo, ports = find_flow(
            slots, keys, src_hi[i], src_lo[i], dst_hi[i], dst_lo[i], np.int64(sport[i]),
            np.int64(dport[i]), pr)
        if row < 0:
            if count >= capacity:
                return count, nc, j
            row = count
            count += 1
            add_flow(slots, keys, h, row, a_hi, a_lo, b_hi, b_lo, ports, pr)
            state[row] = -1
            offered[row] = 0
        elif state[row] >= 0 and pr == 6 and (tcp_flags[i] & 0x12) == 0x02:
            state[row] = -1
            offered[row] = 0
        seen[row] = ts[i]
        out_row[j] = row
        out_label[j] = state[row]
        out_payload[j] = -1
        if state[row] >= 0:
            continue  # decided: its payload is not needed (nor its bytes read)
        doff = np.int64(8)  # UDP
        if pr == 6:
            doff = np.int64(-1)
            if l4[i] + 13 <= cap[i]:
                doff = (np.int64(buf[offset[i] + l4[i] + 12]) >> 4) * 4
        end = np.int64(ipend[i]) if ipend[i] >= 0 else wire[i]
        payload = end - l4[i] - doff if doff >= 0 else np.int64(-1)
        out_payload[j] = payload
        if (payload != 0 or pr != 6) and offered[row] != stamp:
            offered[row] = stamp
            cand[nc] = j
            nc += 1
    return count, nc, -1


class _Table:
    """The flows followed for their names (rows stay put until the table is full).

    It starts small and grows fourfold up to :data:`MAX_FLOWS`: a capture's few
    thousand flows then hash into an index that stays in cache."""

    def __init__(self, capacity: int) -> None:
        self.keys = np.zeros((capacity, 6), np.int64)
        self.state = np.zeros(capacity, np.int64)
        self.seen = np.zeros(capacity, np.int64)
        self.offered = np.zeros(capacity, np.int64)
        self.slots = np.zeros(1 << max(4, (capacity * 2 - 1).bit_length()), np.int64)
        self.count = 0

    @property
    def capacity(self) -> int:
        return int(self.keys.shape[0])

    def grown(self, capacity: int, compiled: bool) -> _Table:
        """The same flows in the same rows, in a larger table."""
        out = _Table(capacity)
        n = out.count = self.count
        for name in ("keys", "state", "seen", "offered"):
            getattr(out, name)[:n] = getattr(self, name)[:n]
        (place_flows.compiled if compiled else place_flows.py)(out.keys, n, out.slots)
        return out


#: Held packets released with their flow's label: (chunk, its rows, label).
_Release = tuple[Packets, np.ndarray, int]


@dataclass
class _Pending:
    """A flow whose name is not decided yet."""

    first_ts: int
    held: list[tuple[Packets, np.ndarray]] = field(default_factory=list)
    n_held: int = 0
    client: tuple[object, ...] | None = None  # the end that sent the first payload
    data: bytearray = field(default_factory=bytearray)
    segments: int = 0
    server: int | None = None  # the server end's 128-bit address, for DNS
    signature: str | None = None


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
        self._label_moves = np.zeros(16, np.bool_)  # label -> its name meets some rule
        self._n_labels = 1  # label 0: no name
        self._label_of: dict[tuple[tuple[str, ...], str | None], int] = {((), None): 0}
        self._label_names: list[tuple[str, ...]] = [()]  # label -> its names
        self._stun = "ms-stun" in rules.signatures
        self._openers = _OPENERS_STUN if self._stun else _OPENERS
        self.compiled = True
        self._stamp = 0  # batches seen, to list one candidate per flow and batch
        self.table = _Table(min(INITIAL_FLOWS, MAX_FLOWS))
        self.pending: dict[int, _Pending] = {}  # by row of the table
        self.dns: dict[int, int] = {}  # address -> the label of the names DNS gave it
        self.held = 0

    # ---- labels -----------------------------------------------------------------
    def _label(self, names: tuple[str, ...], signature: str | None = None) -> int:
        """The label of a flow with these names (the first is its server name) and
        payload signature."""
        key = (names, signature)
        label = self._label_of.get(key)
        if label is None and self._n_labels >= 1_000_000:
            return 0  # bounded: names come from the traffic; beyond, flows go unnamed
        if label is None:
            bits = np.zeros(self.rules.words, np.uint64)
            for n in names:
                bits |= self.rules.name_bits(n)
            if signature is not None:
                bits |= self.rules.signature_bits(signature)
            name_id = self._name_id.get(names[0]) if names else 0
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
                self._label_moves = np.concatenate([self._label_moves, self._label_moves])
            self._label_bits[label] = bits
            self._label_name[label] = name_id
            self._label_moves[label] = bool(bits.any())
            self._n_labels += 1
            self._label_names.append(names)
            if len(self._label_of) < 1_000_000:
                self._label_of[key] = label
        return label

    def _signed(self, label: int, signature: str | None) -> int:
        """``label`` (names from DNS) with the flow's payload signature added."""
        if signature is None:
            return label
        return self._label(self._label_names[label], signature)

    # ---- the stage ----------------------------------------------------------------
    def process(self, batch: Batch, h: Headers, *, compiled: bool = True) -> list[Packets]:
        """Classify and name a decoded batch: returns the packets to count now, in order
        (held packets released by this batch first, then this batch's packets not held)."""
        self.compiled = compiled
        self._stamp += 1
        classes = self.rules.classes(h, compiled=compiled)
        cat, side, sensitive = self.rules.classify_named(classes, compiled=compiled)
        p = Packets(h, cat, side, batch.wirelen, batch.caplen, batch.ts)
        dns_at = np.flatnonzero(h.sport == 53)  # then the few: UDP, ports seen
        if dns_at.size:
            dns_at = dns_at[(h.proto[dns_at] == 17) & (
                (h.flags[dns_at] & (FLAG_PORTS | FLAG_LATER_FRAGMENT)) == FLAG_PORTS)]
        if dns_at.size:  # answers only: a response (QR) with no error and some answers
            base = batch.offset[dns_at] + h.l4[dns_at] + 8
            whole = base + 8 <= batch.offset[dns_at] + batch.caplen[dns_at]
            dns_at, base = dns_at[whole], base[whole]
            buf = batch.buf
            answers = ((buf[base + 2] & 0x80) != 0) & ((buf[base + 3] & 0x0F) == 0) & (
                (buf[base + 6] != 0) | (buf[base + 7] != 0))
            dns_at = dns_at[answers]
        sens = np.flatnonzero(sensitive)
        now = int(p.ts.max()) if len(p) else 0
        released: list[_Release] = []
        if sens.size == 0:
            for i in dns_at.tolist():
                self._learn_dns(batch, p, i)
            self._expire(now, released)
            return self._released_first(released, [p])

        n = sens.size
        label = np.empty(n, np.int64)
        row = np.empty(n, np.int64)
        payload = np.empty(n, np.int64)
        cand = np.empty(n, np.int64)
        kern = follow_flows.select(compiled)
        t = self.table
        start = 0
        found: list[np.ndarray] = []
        while start < n:
            sl = slice(start, n)
            t.count, nc, stop = (int(v) for v in kern(
                batch.buf, h.proto, h.src_hi.view(np.int64), h.src_lo.view(np.int64),
                h.dst_hi.view(np.int64), h.dst_lo.view(np.int64), h.sport, h.dport,
                h.tcp_flags, sens[sl], batch.offset, h.l4, p.cap, h.ipend, p.wire, p.ts,
                t.slots, t.keys, t.state, t.seen, t.offered, self._stamp, t.count, label[sl],
                row[sl], payload[sl], cand[sl]))
            found.append(cand[sl][:nc] + start)
            if stop < 0:
                break
            if t.capacity < MAX_FLOWS:
                # Grow (rows stay): go on from the packet that found the table full.
                t = self.table = t.grown(min(MAX_FLOWS, 4 * t.capacity), compiled)
                start += stop
                continue
            # Full: make room (rows move), then look the whole batch up again.
            self._make_room(now, released)
            start = 0
            found = []
        candidates = np.concatenate(found) if len(found) > 1 else found[0]
        # Candidates and DNS answers in capture order: a flow is named by answers seen
        # before the packet that decides it.
        dns_list = dns_at.tolist()
        state = t.state
        ci = sens[candidates]
        l4 = h.l4[ci].astype(np.int64)
        off = batch.offset[ci]
        tcp = h.proto[ci] == 6
        doff = np.zeros(ci.size, np.int64)
        readable = tcp & (l4 + 13 <= p.cap[ci])
        doff[readable] = (batch.buf[off[readable] + l4[readable] + 12].astype(np.int64) >> 4) * 4
        start_at = off + l4 + doff
        cap_end = off + p.cap[ci]
        n_wire = payload[candidates]
        # Only a payload that may begin a ClientHello or a request is parsed; UDP, cut
        # headers and other payloads take the name DNS gave the server, if any.
        first = np.zeros(ci.size, np.uint8)
        seen = tcp & (n_wire > 0) & (start_at < cap_end)
        first[seen] = batch.buf[start_at[seen]]
        parse = seen & self._openers[first]
        # UDP: a first datagram that may be a STUN message (type's top bits clear, its
        # length field the datagram's less the header) is checked for the signature.
        stun = np.zeros(ci.size, np.bool_)
        if self._stun:
            at_udp = np.flatnonzero(~tcp & (n_wire >= 20) & (off + l4 + 28 <= cap_end))
            if at_udp.size:
                b = (off + l4 + 8)[at_udp]
                buf = batch.buf
                size = (buf[b + 2].astype(np.int64) << 8) | buf[b + 3]
                stun[at_udp] = ((buf[b] & 0xC0) == 0) & (size + 20 == n_wire[at_udp])
        client_src = p.side[ci] != 0
        server_hi = np.where(client_src, h.dst_hi[ci], h.src_hi[ci])
        server_lo = np.where(client_src, h.dst_lo[ci], h.src_lo[ci])
        pending, dns = self.pending, self.dns
        rows_c = row[candidates]
        # Most candidates are plain: nothing to parse, nothing held (UDP, payloads that
        # open no ClientHello or request). They only read the DNS answers seen before
        # them, so they are decided together per span between two answers; the others
        # one by one, in order.
        plain = ~parse & ~stun
        if pending:
            plain &= np.array([r not in pending for r in rows_c.tolist()], np.bool_)
        # Candidates between two answers (both are in capture order; an answer is seen
        # after the candidate it is itself).
        spans = (np.searchsorted(ci, dns_at, side="right") if dns_list
                 else np.zeros(0, np.int64))
        edges = [0, *spans.tolist(), ci.size]
        for d in range(len(edges) - 1):
            if d:
                self._learn_dns(batch, p, dns_list[d - 1])
            lo, hi = edges[d], edges[d + 1]
            if lo == hi:
                continue
            at = np.flatnonzero(plain[lo:hi]) + lo
            if at.size:
                if dns:
                    state[rows_c[at]] = [dns.get((a << 64) | b, 0) for a, b in zip(
                        server_hi[at].tolist(), server_lo[at].tolist(), strict=True)]
                else:
                    state[rows_c[at]] = 0
            for k in np.flatnonzero(~plain[lo:hi]).tolist():
                k += lo
                self._decide(batch, p, sens, row, payload, released, int(candidates[k]),
                             int(ci[k]), int(rows_c[k]), int(n_wire[k]), bool(parse[k]),
                             int(start_at[k]), int(cap_end[k]),
                             (int(server_hi[k]) << 64) | int(server_lo[k]), bool(stun[k]))
        waiting = np.flatnonzero(label < 0)
        if waiting.size:
            label[waiting] = t.state[row[waiting]]
            still = waiting[label[waiting] < 0]  # the packets to hold back
        else:
            still = waiting
        hold = sens[still]
        if hold.size:
            chunk = p.take(hold)
            held_rows = row[still]
            order = np.argsort(held_rows, kind="stable")
            ks = held_rows[order]
            cuts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
            bounds = np.r_[cuts, ks.size]
            for g in range(cuts.size):
                r = int(ks[cuts[g]])
                mine = order[bounds[g] : bounds[g + 1]]
                pend = self.pending.get(r)
                if pend is None:
                    pend = self.pending[r] = self._new_pending(p, int(hold[mine[0]]))
                pend.held.append((chunk, mine))
                pend.n_held += mine.size
            self.held += hold.size
        if not still.size:
            self._apply(p, sens, label, classes)
        else:
            ok = np.flatnonzero(label >= 0)
            if ok.size:
                self._apply(p, sens[ok], label[ok], classes)
        self._expire(now, released)
        if hold.size:
            if (h.flags[hold] & (FLAG_FIRST_FRAGMENT | FLAG_LATER_FRAGMENT)).any():
                # A held first fragment must not settle its datagram yet: copy without.
                keep = np.ones(len(p), bool)
                keep[hold] = False
                p = p.take(keep)
            else:  # left in the batch, marked: not counted with it
                p = Packets(p.h, p.cat, p.side, p.wire, p.cap, p.ts, held=hold)
        return self._released_first(released, [p])

    def _decide(self, batch: Batch, p: Packets, sens: np.ndarray, row: np.ndarray,
                payload: np.ndarray, released: list[_Release], j: int, i: int, r: int,
                n: int, look: bool, begin: int, end: int, server: int, st: bool) -> None:
        """A candidate that is not plain: packet ``i`` (``j`` in ``sens``) of the flow in
        row ``r``, ``n`` payload bytes on the wire, captured from ``begin`` to ``end``;
        ``look``: its payload may open a ClientHello or a request; ``st``: a datagram
        that may be STUN."""
        state = self.table.state
        pend = self.pending.get(r)
        if not look and (pend is None or pend.segments <= 0 or n <= 0):
            # (a message already begun goes on in this packet: parse it)
            if pend is None:  # nothing held: decided in passing
                state[r] = self.dns.get(server, 0) if self.dns else 0
                if st and ms_stun(batch.buf[begin + 8 : end].tobytes(), n):
                    state[r] = self._signed(int(state[r]), "ms-stun")
            else:
                state[r] = self._finish_pending(r, released)
            return
        if pend is None:
            pend = self.pending[r] = self._new_pending(p, i)
        if self._offer(batch, p.h, i, n, begin, end, pend) or \
                self._offer_more(batch, p, sens, row, payload, j, pend):
            state[r] = self._finish_pending(r, released)

    def _released_first(self, released: list[_Release], rest: list[Packets],
                        ) -> list[Packets]:
        """Released packets, classified with their flows' names, then ``rest``."""
        if not released:
            return rest
        # One copy per held chunk, whatever the number of flows released from it.
        by_chunk: dict[int, tuple[Packets, list[np.ndarray], list[np.ndarray]]] = {}
        for chunk, rows, label in released:
            entry = by_chunk.setdefault(id(chunk), (chunk, [], []))
            entry[1].append(rows)
            entry[2].append(np.full(rows.size, label, np.int64))
        parts, label_parts = [], []
        for chunk, rows_list, labels_list in by_chunk.values():
            parts.append(chunk.take(np.concatenate(rows_list)))
            label_parts.append(np.concatenate(labels_list))
        out = Packets.concat(parts)
        labels = np.concatenate(label_parts)
        self._apply(out, np.arange(len(out)), labels,
                    self.rules.classes(out.h, compiled=self.compiled))
        return [out, *rest]

    def finish(self) -> Packets | None:
        """Decide every pending flow with what is known; their held packets."""
        released: list[_Release] = []
        for k in list(self.pending):
            self._finish_pending(k, released)
        if not released:
            return None
        return self._released_first(released, [])[0]

    # ---- helpers ------------------------------------------------------------------
    def _new_pending(self, p: Packets, i: int) -> _Pending:
        """A flow first seen (for its name) at packet ``i``."""
        h = p.h
        if p.side[i] != 0:  # the source is the client end: the server is the destination
            server = (int(h.dst_hi[i]) << 64) | int(h.dst_lo[i])
        else:
            server = (int(h.src_hi[i]) << 64) | int(h.src_lo[i])
        return _Pending(int(p.ts[i]), server=server)

    def _offer(self, batch: Batch, h: Headers, i: int, n: int, begin: int, end: int,
               pend: _Pending) -> bool:
        """Whether TCP packet ``i`` (``n`` payload bytes on the wire, captured from
        ``begin`` to ``end`` in the buffer) decides its flow's name; gathers the
        client's first bytes."""
        sender = (h.src_hi[i], h.src_lo[i], h.sport[i])
        if pend.client is None:
            pend.client = sender
            pend.server = (int(h.dst_hi[i]) << 64) | int(h.dst_lo[i])
        elif sender != pend.client:
            return True  # the server answers: the client's message is complete
        got = min(n, end - begin)
        room = MAX_HELLO - len(pend.data)
        if got > 0 and room > 0:
            pend.data += batch.buf[begin : begin + min(got, room)].tobytes()
        pend.segments += 1
        data = bytes(pend.data)
        if self._stun and data and data[0] < 6:  # STUN framed for TCP, or nothing known
            if pend.segments == 1 and ms_stun(data, n, framed=True):
                pend.signature = "ms-stun"
            pend.data = bytearray()
            pend.segments = -1
            return True
        name = tls_sni(data) if data[:1] == b"\x16" else http_host(data)
        if name != NEED_MORE or got < n or pend.segments >= MAX_SEGMENTS:
            pend.data = bytearray(name.encode() if name and name != NEED_MORE else b"")
            pend.segments = -1  # decided: data holds the name, if any
            return True
        return False

    def _offer_more(self, batch: Batch, p: Packets, sens: np.ndarray, row: np.ndarray,
                    payload: np.ndarray, j: int, pend: _Pending) -> bool:
        """A message that continues: offer the flow's later packets in this batch
        (rare: a ClientHello over several segments)."""
        h = p.h
        r = row[j]
        offers = (payload != 0) | (h.proto[sens] != 6)
        for k in np.flatnonzero((row == r) & offers).tolist():
            if k <= j:
                continue
            i = int(sens[k])
            begin = int(batch.offset[i]) + int(h.l4[i]) + (
                (int(batch.buf[int(batch.offset[i]) + int(h.l4[i]) + 12]) >> 4) * 4)
            end = int(batch.offset[i]) + int(p.cap[i])
            if self._offer(batch, h, i, int(payload[k]), begin, end, pend):
                return True
        return False

    def _finish_pending(self, k: int, released: list[_Release]) -> int:
        """Decide the flow in row ``k``: its label, and its held packets into
        ``released``."""
        pend = self.pending.pop(k)
        if pend.segments == -1 and pend.data:
            label = self._label((pend.data.decode(),), pend.signature)
        else:
            label = self._signed(self.dns.get(pend.server, 0) if pend.server is not None
                                 else 0, pend.signature)
        self.table.state[k] = label
        for chunk, rows in pend.held:
            released.append((chunk, rows, label))
        self.held -= pend.n_held
        return label

    def _apply(self, p: Packets, at: np.ndarray, labels: np.ndarray, classes: Classes,
               ) -> None:
        """Classify the packets at ``at`` (``classes``: those of all ``p``) again with
        their labels' names."""
        named = np.flatnonzero(labels)  # label 0: no name, nothing to change
        if not named.size:
            return
        at, labels = at[named], labels[named]
        p.h.name[at] = self._label_name[labels]
        # A name that meets no rule's name condition leaves the name-free answer.
        moves = self._label_moves[labels]
        if not moves.any():
            return
        at, labels = at[moves], labels[moves]
        classes = classes.take(at)
        cat, side = self.rules.reclassify(classes, self._label_bits[labels],
                                          compiled=self.compiled)
        p.cat[at] = cat
        p.side[at] = side

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
            self.dns[address] = self._label(chain)

    def _make_room(self, now: int, released: list[_Release]) -> None:
        """The table is full: decide what is pending, keep the most recently seen half
        of the flows (a flow forgotten and seen again is named anew)."""
        for k in list(self.pending):
            self._finish_pending(k, released)
        t = self.table
        keep = np.argsort(t.seen[: t.count], kind="stable")[t.count // 2 :]
        keep.sort()
        m = keep.size
        t.keys[:m] = t.keys[keep]
        t.state[:m] = t.state[keep]
        t.seen[:m] = t.seen[keep]
        t.offered[:m] = t.offered[keep]
        t.count = m
        t.slots[:] = 0
        (place_flows.compiled if self.compiled else place_flows.py)(t.keys, t.count, t.slots)

    def _expire(self, now: int, released: list[_Release]) -> None:
        """Decide flows pending too long, and the oldest while too much is held."""
        while self.pending:
            k = next(iter(self.pending))
            if self.pending[k].first_ts >= now - PENDING_TIMEOUT_NS and self.held <= MAX_HELD:
                break
            self._finish_pending(k, released)
