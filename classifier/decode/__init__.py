"""Decode a batch of raw packets into header columns.

Link layers (see ``capture-formats.md``): Ethernet with any stack of 802.1Q/802.1ad
tags, MPLS label stacks and PPPoE sessions; Linux cooked v1/v2; raw IP; IPv4/IPv6
link types; BSD null and loop. IPv4 with options; IPv6 through hop-by-hop, routing,
destination-options and fragment headers.

Header chains have variable length and each step depends on the last, so the walk is
one kernel loop per packet; its outputs are plain columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._jit import kernel
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
    12: "raw",
    14: "raw",
    101: "raw",
    108: "loop",
    113: "linux-sll",
    228: "ipv4",
    229: "ipv6",
    276: "linux-sll2",
}
KNOWN_LINKTYPES = frozenset(LINKTYPE_NAMES)


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

    def __len__(self) -> int:
        return int(self.ip.shape[0])


@kernel
def decode_packets(buf, off, cap, linktype, ip, proto, sport, dport, flags, frag_id,  # type: ignore[no-untyped-def]
                   src_hi, src_lo, dst_hi, dst_lo, dscp, tcp_flags, l4off, anomaly):
    """Fill the header columns for every packet (see :class:`Headers`)."""
    for i in range(off.shape[0]):
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
        # ---- link layer: find the network header at q and its type ---------------
        # et: 0x0800 IPv4, 0x86DD IPv6, -1 version nibble decides, anything else non-IP
        q = p
        et = 0
        if lt == 1:
            if p + 14 > end:
                anomaly[i] = 4
                continue
            et = (buf[p + 12] << 8) | buf[p + 13]
            q = p + 14
        elif lt == 113:
            if p + 16 > end:
                anomaly[i] = 4
                continue
            et = (buf[p + 14] << 8) | buf[p + 15]
            q = p + 16
        elif lt == 276:
            if p + 20 > end:
                anomaly[i] = 4
                continue
            et = (buf[p] << 8) | buf[p + 1]
            q = p + 20
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
                af = (buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]
            else:
                # The writer's byte order, which may not be the file's: a family is
                # small, so whichever reading fits in 16 bits is the right one.
                af = (buf[p + 3] << 24) | (buf[p + 2] << 16) | (buf[p + 1] << 8) | buf[p]
                if af > 0xFFFF:
                    af = (buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]
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
                or et == 0x8864:
            if et == 0x8847 or et == 0x8848:
                bottom = 0
                while q + 4 <= end:
                    bottom = buf[q + 2] & 1
                    q += 4
                    if bottom:
                        break
                et = -1 if bottom else -2
            elif et == 0x8864:
                if q + 8 > end:
                    et = -2
                    break
                ppp = (buf[q + 6] << 8) | buf[q + 7]
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
                et = (buf[q + 2] << 8) | buf[q + 3]
                q += 4
        if et == -2:
            anomaly[i] = 4
            continue
        if et == -1:
            if q >= end:
                anomaly[i] = 4
                continue
            v = buf[q] >> 4
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
            ihl = (buf[q] & 15) * 4
            if buf[q] >> 4 != 4 or ihl < 20:
                anomaly[i] = 5
                continue
            dscp[i] = buf[q + 1] >> 2
            frag = (buf[q + 6] << 8) | buf[q + 7]
            frag_id[i] = (buf[q + 4] << 8) | buf[q + 5]
            pr = buf[q + 9]
            proto[i] = pr
            src_lo[i] = 0xFFFF00000000 | (buf[q + 12] << 24) | (buf[q + 13] << 16) \
                | (buf[q + 14] << 8) | buf[q + 15]
            dst_lo[i] = 0xFFFF00000000 | (buf[q + 16] << 24) | (buf[q + 17] << 16) \
                | (buf[q + 18] << 8) | buf[q + 19]
            t = q + ihl
            if frag & 0x1FFF:
                flags[i] = 2
                continue
            if frag & 0x2000:
                flags[i] = 4
        elif et == 0x86DD:
            ip[i] = 6
            if q + 40 > end:
                anomaly[i] = 2
                continue
            if buf[q] >> 4 != 6:
                anomaly[i] = 5
                continue
            dscp[i] = (((buf[q] & 15) << 4) | (buf[q + 1] >> 4)) >> 2
            hi = 0
            lo = 0
            for k in range(8):
                hi = (hi << 8) | buf[q + 8 + k]
                lo = (lo << 8) | buf[q + 16 + k]
            src_hi[i] = hi
            src_lo[i] = lo
            hi = 0
            lo = 0
            for k in range(8):
                hi = (hi << 8) | buf[q + 24 + k]
                lo = (lo << 8) | buf[q + 32 + k]
            dst_hi[i] = hi
            dst_lo[i] = lo
            nh = buf[q + 6]
            t = q + 40
            later = False
            cut = False
            while nh == 0 or nh == 43 or nh == 60 or nh == 44:
                if nh == 44:
                    if t + 8 > end:
                        cut = True
                        break
                    fo = (buf[t + 2] << 8) | buf[t + 3]
                    frag_id[i] = (buf[t + 4] << 24) | (buf[t + 5] << 16) | (buf[t + 6] << 8) \
                        | buf[t + 7]
                    nh = buf[t]
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
                    nh2 = buf[t]
                    t += (buf[t + 1] + 1) * 8
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
            sport[i] = (buf[t] << 8) | buf[t + 1]
            dport[i] = (buf[t + 2] << 8) | buf[t + 3]
            flags[i] |= 1
            l4off[i] = t - p
            if pr == 6 and t + 14 <= end:
                tcp_flags[i] = buf[t + 13]


def decode_batch(batch: Batch, *, compiled: bool = True) -> Headers:
    """Decode every packet of ``batch`` into :class:`Headers` columns."""
    n = len(batch)
    cols = Headers(
        ip=np.empty(n, np.uint8),
        proto=np.empty(n, np.uint8),
        sport=np.empty(n, np.uint16),
        dport=np.empty(n, np.uint16),
        flags=np.empty(n, np.uint8),
        frag_id=np.empty(n, np.uint32),
        src_hi=np.empty(n, np.uint64),
        src_lo=np.empty(n, np.uint64),
        dst_hi=np.empty(n, np.uint64),
        dst_lo=np.empty(n, np.uint64),
        dscp=np.empty(n, np.uint8),
        tcp_flags=np.empty(n, np.uint8),
        l4=np.empty(n, np.int32),
        anomaly=np.empty(n, np.uint8),
    )
    decode_packets.select(compiled)(
        batch.buf, batch.offset, batch.caplen, batch.linktype,
        cols.ip, cols.proto, cols.sport, cols.dport, cols.flags, cols.frag_id,
        cols.src_hi, cols.src_lo, cols.dst_hi, cols.dst_lo, cols.dscp, cols.tcp_flags,
        cols.l4, cols.anomaly,
    )
    return cols
