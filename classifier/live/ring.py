"""The fast capture path: a Linux AF_PACKET socket with a TPACKET_V3 ring.

The kernel fills fixed-size blocks of a memory-mapped ring with packets and hands a
block over when it is full or after a short timeout. A compiled walk copies the
packets of every ready block into one batch buffer (re-inserting the VLAN tag the
kernel took out, or writing a Linux cooked header on a cooked socket) and the block is
given back at once, so the ring is free again while the batch is classified.

Interfaces whose frames are Ethernet (and the loopback) are read raw; ``any`` and
every other kind of interface are read cooked (link type 113, like ``tcpdump -i any``).
"""

from __future__ import annotations

import contextlib
import mmap
import select
import socket
import struct
import time

import numpy as np

from .._bytes import le16, le32
from .._jit import kernel
from ..sources.batch import BATCH_BYTES, MAX_PACKETS, Batch
from .base import LiveSource, LiveStats, interface_index, open_failure

__all__ = ["RingSource", "walk_block"]

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_MR_PROMISC = 1
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
#: DLT_RAW as libpcap numbers it on Linux: a cooked socket's filter sees the IP header.
DLT_RAW = 12
#: Bytes of a struct tpacket3_hdr, aligned: the struct sockaddr_ll follows.
SOCKADDR_LL_AT = 48


@kernel
def walk_block(ring, base, cooked, out, pos, offset, caplen, wirelen, ts, n):  # type: ignore[no-untyped-def]
    """Copy the packets of the block at ``ring[base:]`` to ``out[pos:]``; returns the
    new ``(pos, n)``. Offsets follow struct tpacket_block_desc and tpacket3_hdr."""
    num = le32(ring, base + 12)
    at = base + (le32(ring, base + 16))
    for _ in range(num):
        nxt = le32(ring, at)
        sec = le32(ring, at + 4)
        nsec = le32(ring, at + 8)
        snap = le32(ring, at + 12)
        length = le32(ring, at + 16)
        status = le32(ring, at + 20)
        mac = le16(ring, at + 24)
        tci = le16(ring, at + 32)
        tpid = 0x8100
        if status & 0x40:
            tpid = le16(ring, at + 36)
        vlan = (status & 0x10) != 0
        src = at + mac
        start = pos
        extra = 0
        if cooked:
            # struct sockaddr_ll: family, protocol (network order), ifindex, hatype,
            # pkttype, halen, addr; the cooked header is pkttype, hatype, halen, addr, protocol.
            sa = at + 48
            hatype = le16(ring, sa + 8)
            halen = ring[sa + 11]
            out[pos] = 0
            out[pos + 1] = ring[sa + 10]
            out[pos + 2] = hatype >> 8
            out[pos + 3] = hatype & 0xFF
            out[pos + 4] = 0
            out[pos + 5] = halen
            for i in range(8):
                out[pos + 6 + i] = ring[sa + 12 + i] if i < halen else 0
            pos += 14
            extra = 16
            if vlan:
                out[pos] = tpid >> 8
                out[pos + 1] = tpid & 0xFF
                out[pos + 2] = tci >> 8
                out[pos + 3] = tci & 0xFF
                pos += 4
                extra += 4
            out[pos] = ring[sa + 2]
            out[pos + 1] = ring[sa + 3]
            pos += 2
            out[pos:pos + snap] = ring[src:src + snap]
            pos += snap
        elif vlan and snap >= 12:
            out[pos:pos + 12] = ring[src:src + 12]
            out[pos + 12] = tpid >> 8
            out[pos + 13] = tpid & 0xFF
            out[pos + 14] = tci >> 8
            out[pos + 15] = tci & 0xFF
            out[pos + 16:pos + 4 + snap] = ring[src + 12:src + snap]
            pos += snap + 4
            extra = 4
        else:
            out[pos:pos + snap] = ring[src:src + snap]
            pos += snap
        offset[n] = start
        caplen[n] = snap + extra
        wirelen[n] = length + extra
        ts[n] = sec * 1_000_000_000 + nsec
        n += 1
        at += nxt
    return pos, n


class RingSource(LiveSource):
    """Packets of one interface (or ``any``) from a TPACKET_V3 ring."""

    backend = "af_packet"

    def __init__(self, interface: str, *, bpf: str | None = None,
                 ring_bytes: int = 64 << 20, block_bytes: int = 1 << 20,
                 block_timeout_ms: int = 50, promiscuous: bool = True) -> None:
        self.interface = interface
        self.filter = bpf
        self.stats = LiveStats()
        index = 0 if interface == "any" else interface_index(interface)
        self.cooked = interface == "any" or _hardware_type(interface) not in (
            ARPHRD_ETHER, ARPHRD_LOOPBACK)
        self.linktype = LINKTYPE_LINUX_SLL if self.cooked else LINKTYPE_ETHERNET
        program = None
        if bpf:
            from .bpf import compile_filter  # libpcap, through scapy: only with a filter

            program = compile_filter(bpf, DLT_RAW if self.cooked else LINKTYPE_ETHERNET)
        self.block_bytes = block_bytes
        self.blocks = max(2, ring_bytes // block_bytes)
        kind = socket.SOCK_DGRAM if self.cooked else socket.SOCK_RAW
        try:
            # A named interface: protocol 0 receives nothing until the bind, once the
            # filter and the ring are in place. ``any`` cannot be bound: its packets
            # before the ring exists go to the socket's queue, which is never read.
            self.sock = socket.socket(socket.AF_PACKET, kind,
                                      0 if index else socket.htons(ETH_P_ALL))
        except PermissionError as exc:
            raise open_failure(interface) from exc
        try:
            if program is not None:
                from .bpf import attach_filter

                attach_filter(self.sock, program)
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame = 2048
            req = struct.pack("7I", block_bytes, self.blocks, frame,
                              block_bytes // frame * self.blocks, block_timeout_ms, 0, 0)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.map = mmap.mmap(self.sock.fileno(), block_bytes * self.blocks,
                                 mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            if index:
                self.sock.bind((interface, ETH_P_ALL))
                if promiscuous:
                    mreq = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
                    self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        except BaseException:
            self.sock.close()
            raise
        self.ring = np.frombuffer(self.map, np.uint8)
        self.status = np.frombuffer(self.map, np.uint32)  # block_status: word 2 of a block
        self.current = 0
        self.poll = select.poll()
        self.poll.register(self.sock.fileno(), select.POLLIN | select.POLLERR)
        # Room for the blocks taken into one batch, plus the headers added to them.
        per_batch = max(1, min(BATCH_BYTES // block_bytes, MAX_PACKETS // (block_bytes // 64)))
        self.per_batch = per_batch
        self.out = np.empty(per_batch * block_bytes * 2, np.uint8)
        cap = per_batch * (block_bytes // 64)
        self.cols = [np.empty(cap, np.int64) for _ in range(4)]
        self.kernel = walk_block.compiled

    def _ready(self, i: int) -> bool:
        return bool(self.status[(i * self.block_bytes + 8) // 4] & TP_STATUS_USER)

    def next_batch(self, timeout: float) -> Batch | None:
        """The packets of the blocks ready now (waiting up to ``timeout`` seconds for
        one); None if none came."""
        if not self._ready(self.current):
            deadline = time.monotonic() + timeout
            while not self._ready(self.current):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.poll.poll(max(1, int(left * 1000)))
        offset, caplen, wirelen, ts = self.cols
        pos = n = 0
        taken = 0
        while taken < self.per_batch and self._ready(self.current):
            base = self.current * self.block_bytes
            pos, n = self.kernel(self.ring, base, self.cooked, self.out, pos, offset,
                                 caplen, wirelen, ts, n)
            self.status[(base + 8) // 4] = 0  # TP_STATUS_KERNEL: the block is the kernel's again
            self.current = (self.current + 1) % self.blocks
            taken += 1
        return Batch(self.out, offset[:n], caplen[:n], wirelen[:n], ts[:n],
                     np.full(n, self.linktype, np.int64), 0)

    def kernel_counts(self) -> tuple[int, int]:
        """Packets the filter passed (dropped ones included) and packets dropped, since
        the last call (the kernel resets its counters when read)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops, _ = struct.unpack("3I", raw)
        return packets, drops

    def close(self) -> None:
        self.poll.unregister(self.sock.fileno())
        del self.ring, self.status
        # A batch never points into the ring (its packets are copied out), but an
        # exported view would make close() fail: the socket's close frees the ring then.
        with contextlib.suppress(BufferError):
            self.map.close()
        self.sock.close()


def _hardware_type(interface: str) -> int:
    """The ARPHRD_ type of an interface (1: Ethernet)."""
    try:
        with open(f"/sys/class/net/{interface}/type", encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return ARPHRD_ETHER
