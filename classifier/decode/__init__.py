"""Decode a batch of raw packets into header columns.

Link layers (see ``capture-formats.md``): Ethernet with any stack of 802.1Q/802.1ad
tags, MPLS label stacks, PPPoE sessions and Cisco FabricPath; Linux cooked v1/v2; raw
IP; IPv4/IPv6 link types; BSD null and loop; PPP and Cisco HDLC. IPv4 with options; IPv6 through hop-by-hop, routing,
destination-options and fragment headers.

Header chains have variable length and each step depends on the last, so the walk is
one kernel loop per packet; its outputs are plain columns.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from .._bytes import be16, be32, be64, le32, u8
from .._jit import kernel

if TYPE_CHECKING:
    from ..sources.batch import Batch

__all__ = [
    "ANOMALY_NAMES",
    "FLAG_FIRST_FRAGMENT",
    "FLAG_LATER_FRAGMENT",
    "FLAG_PORTS",
    "KNOWN_LINKTYPES",
    "LINKTYPE_NAMES",
    "Headers",
    "decode_batch",
    "decode_packets",
]

#: ``flags`` bits.
FLAG_PORTS = 1  # the transport ports were captured
FLAG_LATER_FRAGMENT = 2  # a fragment other than the first: no transport header
FLAG_FIRST_FRAGMENT = 4  # the first fragment of a fragmented datagram

#: ``anomaly`` codes and their report names (0 is none).
ANOMALY_NAMES = {
    1: "ports-not-captured",
    2: "ip-header-cut",
    3: "unknown-link-type",
    4: "link-header-cut",
    5: "bad-ip-header",
}

LINKTYPE_NAMES = {
    0: "null",
    1: "ethernet",
    9: "ppp",
    12: "raw",
    14: "raw",
    50: "ppp-hdlc",
    101: "raw",
    104: "c-hdlc",
    108: "loop",
    113: "linux-sll",
    228: "ipv4",
    229: "ipv6",
    276: "linux-sll2",
}
KNOWN_LINKTYPES = frozenset(LINKTYPE_NAMES)


_DTYPES = {
    "ip": np.uint8, "proto": np.uint8, "sport": np.uint16, "dport": np.uint16,
    "flags": np.uint8, "frag_id": np.uint32, "src_hi": np.uint64, "src_lo": np.uint64,
    "dst_hi": np.uint64, "dst_lo": np.uint64, "dscp": np.uint8, "tcp_flags": np.uint8,
    "l4": np.int32, "anomaly": np.uint8, "ipend": np.int32, "name": np.int32,
}


@dataclass(frozen=True)
class Headers:
    """Header columns of a batch, one row per packet.

    Addresses are 128-bit, as two 64-bit halves; IPv4 addresses are IPv4-mapped
    (``::ffff:a.b.c.d``) so that both families share one column and one lookup.
    """

    ip: np.ndarray  # uint8: 0 no IP layer, 4, 6
    proto: np.ndarray  # uint8: transport protocol (IPv6: after extension headers)
    sport: np.ndarray  # uint16
    dport: np.ndarray  # uint16
    flags: np.ndarray  # uint8: FLAG_* bits
    frag_id: np.ndarray  # uint32: IPv4/IPv6 fragment identification
    src_hi: np.ndarray  # uint64
    src_lo: np.ndarray  # uint64
    dst_hi: np.ndarray  # uint64
    dst_lo: np.ndarray  # uint64
    dscp: np.ndarray  # uint8
    tcp_flags: np.ndarray  # uint8
    l4: np.ndarray  # int32: offset of the transport header in the packet, -1 if none
    anomaly: np.ndarray  # uint8: ANOMALY_NAMES code
    #: int32: where the IP datagram ends in the packet by its length field (link
    #: padding excluded), -1 unknown (no IP, or a length of 0 as in TSO captures)
    ipend: np.ndarray
    #: int32: the flow's server name, an index into the capture's names (0: none);
    #: the decoder leaves 0, the naming stage sets it
    name: np.ndarray

    def __len__(self) -> int:
        return int(self.ip.shape[0])

    def as_tuple(self) -> tuple[np.ndarray, ...]:
        """The columns in field order, as the kernels take them."""
        return _columns(self)

    def head(self, n: int) -> Headers:
        """The first ``n`` rows."""
        return Headers(*(col[:n] for col in self.as_tuple()))

    @classmethod
    def empty(cls, n: int) -> Headers:
        """Uninitialised columns for ``n`` packets."""
        return cls(*(np.empty(n, dtype) for dtype in _DTYPES.values()))


# Taken for every batch, several times: one C-level getter instead of dataclasses.fields.
_columns = operator.attrgetter(*(f.name for f in fields(Headers)))
assert tuple(_DTYPES) == tuple(f.name for f in fields(Headers))  # empty() relies on it


@kernel
def decode_packets(buf, off, cap, linktype, start, stop, ip, proto, sport, dport, flags,  # type: ignore[no-untyped-def]
                   frag_id, src_hi, src_lo, dst_hi, dst_lo, dscp, tcp_flags, l4off, anomaly,
                   ipend, name):
    """Fill the header columns of packets ``start`` to ``stop`` (see :class:`Headers`):
    the readers decode a run of records at a time, right after walking it."""
    for i in range(start, stop):
        p = off[i]
        end = p + cap[i]
        lt = linktype[i]
        ip[i] = 0
        proto[i] = 0
        sport[i] = 0
        dport[i] = 0
        flags[i] = 0
        frag_id[i] = 0
        src_hi[i] = 0
        src_lo[i] = 0
        dst_hi[i] = 0
        dst_lo[i] = 0
        dscp[i] = 0
        tcp_flags[i] = 0
        l4off[i] = -1
        anomaly[i] = 0
        ipend[i] = -1
        name[i] = 0
        # ---- link layer: find the network header at q and its type ---------------
        # et: 0x0800 IPv4, 0x86DD IPv6, -1 version nibble decides, anything else non-IP
        q = p
        et = 0
        if lt == 1:
            if p + 14 > end:
                anomaly[i] = 4
                continue
            et = be16(buf, p + 12)
            q = p + 14
        elif lt == 113:
            if p + 16 > end:
                anomaly[i] = 4
                continue
            et = be16(buf, p + 14)
            q = p + 16
        elif lt == 276:
            if p + 20 > end:
                anomaly[i] = 4
                continue
            et = be16(buf, p)
            q = p + 20
        elif lt == 104:  # Cisco HDLC: address, control, then an EtherType
            if p + 4 > end:
                anomaly[i] = 4
                continue
            et = be16(buf, p + 2)
            q = p + 4
        elif (lt == 9 or lt == 50) and p + 4 <= end and (u8(buf, p) == 0x0F or u8(buf, p) == 0x8F):
            # Cisco HDLC framing in a PPP capture (its address byte tells it apart).
            et = be16(buf, p + 2)
            q = p + 4
        elif lt == 9 or lt == 50:  # PPP, optionally with HDLC address and control
            q = p
            if p + 2 <= end and u8(buf, p) == 0xFF and u8(buf, p + 1) == 0x03:
                q = p + 2
            if q + 2 > end:
                anomaly[i] = 4
                continue
            ppp = be16(buf, q)
            q += 2
            if ppp == 0x0021:
                et = 0x0800
            elif ppp == 0x0057:
                et = 0x86DD
            elif ppp == 0x0281 or ppp == 0x0283:
                et = 0x8847
            else:
                continue
        elif lt == 101 or lt == 12 or lt == 14:
            et = -1
        elif lt == 228:
            et = 0x0800
        elif lt == 229:
            et = 0x86DD
        elif lt == 0 or lt == 108:
            if p + 4 > end:
                anomaly[i] = 4
                continue
            if lt == 108:
                af = be32(buf, p)
            else:
                # The writer's byte order, which may not be the file's: a family is
                # small, so whichever reading fits in 16 bits is the right one.
                af = le32(buf, p)
                if af > 0xFFFF:
                    af = be32(buf, p)
            q = p + 4
            if af == 2:
                et = 0x0800
            elif af == 24 or af == 28 or af == 30:
                et = 0x86DD
            else:
                continue
        else:
            anomaly[i] = 3
            continue
        # VLAN tags, MPLS labels and PPPoE may stack in any order and depth; every
        # step consumes bytes, so the loop ends within the captured length.
        while et == 0x8100 or et == 0x88A8 or et == 0x9100 or et == 0x8847 or et == 0x8848 \
                or et == 0x8864 or et == 0x8903:
            if et == 0x8847 or et == 0x8848:
                bottom = 0
                while q + 4 <= end:
                    bottom = u8(buf, q + 2) & 1
                    q += 4
                    if bottom:
                        break
                et = -1 if bottom else -2
            elif et == 0x8903:
                # Cisco FabricPath: FTag/TTL, then the whole original Ethernet frame.
                if q + 16 > end:
                    et = -2
                    break
                et = be16(buf, q + 14)
                q += 16
            elif et == 0x8864:
                if q + 8 > end:
                    et = -2
                    break
                ppp = be16(buf, q + 6)
                q += 8
                if ppp == 0x0021:
                    et = 0x0800
                elif ppp == 0x0057:
                    et = 0x86DD
                else:
                    et = 0
            else:
                if q + 4 > end:
                    et = -2
                    break
                et = be16(buf, q + 2)
                q += 4
        if et == -2:
            anomaly[i] = 4
            continue
        if et == -1:
            if q >= end:
                anomaly[i] = 4
                continue
            v = u8(buf, q) >> 4
            if v == 4:
                et = 0x0800
            elif v == 6:
                et = 0x86DD
            else:
                continue
        # ---- network layer ---------------------------------------------------------
        if et == 0x0800:
            ip[i] = 4
            if q + 20 > end:
                anomaly[i] = 2
                continue
            ihl = (u8(buf, q) & 15) * 4
            if u8(buf, q) >> 4 != 4 or ihl < 20:
                anomaly[i] = 5
                continue
            dscp[i] = u8(buf, q + 1) >> 2
            total = be16(buf, q + 2)
            if total >= ihl:
                ipend[i] = q - p + total
            frag = be16(buf, q + 6)
            frag_id[i] = be16(buf, q + 4)
            pr = u8(buf, q + 9)
            proto[i] = pr
            src_lo[i] = 0xFFFF00000000 | be32(buf, q + 12)
            dst_lo[i] = 0xFFFF00000000 | be32(buf, q + 16)
            t = q + ihl
            if frag & 0x1FFF:
                flags[i] = 2
                continue
            if frag & 0x2000:
                flags[i] = 4
            if t > end:  # options cut: the addresses are known, the ports are not
                anomaly[i] = 2
                continue
        elif et == 0x86DD:
            ip[i] = 6
            if q + 40 > end:
                anomaly[i] = 2
                continue
            if u8(buf, q) >> 4 != 6:
                anomaly[i] = 5
                continue
            dscp[i] = (((u8(buf, q) & 15) << 4) | (u8(buf, q + 1) >> 4)) >> 2
            plen = be16(buf, q + 4)
            if plen > 0:
                ipend[i] = q - p + 40 + plen
            src_hi[i] = be64(buf, q + 8)
            src_lo[i] = be64(buf, q + 16)
            dst_hi[i] = be64(buf, q + 24)
            dst_lo[i] = be64(buf, q + 32)
            nh = u8(buf, q + 6)
            t = q + 40
            later = False
            cut = False
            while nh == 0 or nh == 43 or nh == 60 or nh == 44:
                if nh == 44:
                    if t + 8 > end:
                        cut = True
                        break
                    fo = be16(buf, t + 2)
                    frag_id[i] = be32(buf, t + 4)
                    nh = u8(buf, t)
                    t += 8
                    if fo >> 3:
                        later = True
                        break
                    if fo & 1:
                        flags[i] = 4
                else:
                    if t + 2 > end:
                        cut = True
                        break
                    nh2 = u8(buf, t)
                    t += (u8(buf, t + 1) + 1) * 8
                    nh = nh2
            proto[i] = nh
            if later:
                flags[i] = 2
                continue
            if cut:
                if nh == 0 or nh == 43 or nh == 60 or nh == 44:
                    anomaly[i] = 1
                continue
        else:
            continue
        # ---- transport ports ---------------------------------------------------------
        pr = proto[i]
        if pr == 6 or pr == 17 or pr == 132 or pr == 136:
            if t + 4 > end:
                anomaly[i] = 1
                continue
            sport[i] = be16(buf, t)
            dport[i] = be16(buf, t + 2)
            flags[i] |= 1
            l4off[i] = t - p
            if pr == 6 and t + 14 <= end:
                tcp_flags[i] = u8(buf, t + 13)


def decode_batch(batch: Batch, *, compiled: bool = True) -> Headers:
    """Decode every packet of ``batch`` into :class:`Headers` columns (the reader's
    when it decoded them as it walked)."""
    if batch.headers is not None:
        return batch.headers
    cols = Headers.empty(len(batch))
    decode_packets.select(compiled)(
        batch.buf, batch.offset, batch.caplen, batch.linktype, 0, len(batch), *cols.as_tuple()
    )
    return cols
