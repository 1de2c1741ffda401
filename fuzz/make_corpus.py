"""Write the seed corpora of the harnesses (``fuzz/corpus/``): small, valid inputs that
reach every reader and decoder branch the fuzzer then mutates from.

    python fuzz/make_corpus.py            # rewrites fuzz/corpus/{capture,rules}/

The seeds are deterministic; the captures are a few hundred bytes each.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import writers  # noqa: E402

HERE = Path(__file__).resolve().parent
TS = 1_428_312_600 * 1_000_000_000
MAC = bytes.fromhex("001122334455") + bytes.fromhex("66778899aabb")


def be16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def tcp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return be16(sport) + be16(dport) + bytes(8) + b"\x50\x18\xff\xff" + bytes(4) + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return be16(sport) + be16(dport) + be16(8 + len(payload)) + b"\0\0" + payload


def ipv4(proto: int, segment: bytes, *, frag: int = 0, ident: int = 7,
         options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    return (bytes((0x40 | ihl, 0)) + be16(4 * ihl + len(segment)) + be16(ident) + be16(frag)
            + bytes((64, proto)) + b"\0\0" + bytes((10, 0, 0, 7)) + bytes((52, 96, 0, 10))
            + options + segment)


def ipv6(nh: int, body: bytes) -> bytes:
    src = bytes.fromhex("20010db8000000000000000000000007")
    dst = bytes.fromhex("2603103700000000000000000000000a")
    return b"\x60\0\0\0" + be16(len(body)) + bytes((nh, 64)) + src + dst + body


def ether(et: int, body: bytes) -> bytes:
    return MAC + be16(et) + body


def frames() -> list[bytes]:
    """Ethernet frames over the link-layer stacks and IP features the decoder knows."""
    v4 = ipv4(6, tcp(50000, 443))
    hop_frag = (bytes((44, 0)) + bytes(6)  # hop-by-hop, then a fragment header
                + bytes((17, 0)) + be16(0 << 3 | 1) + (9).to_bytes(4, "big")
                + udp(50020, 3478))
    mpls = (16 << 12 | 64).to_bytes(4, "big") + (17 << 12 | 1 << 8 | 64).to_bytes(4, "big")
    return [
        ether(0x0800, v4),
        ether(0x0800, ipv4(17, udp(50010, 3478, b"rtp")),),
        ether(0x86DD, ipv6(6, tcp(50040, 443))),
        ether(0x86DD, ipv6(0, hop_frag)),
        ether(0x0800, ipv4(17, udp(50020, 3478), frag=0x2000, ident=3)),
        ether(0x0800, ipv4(17, b"later", frag=185, ident=3)),
        ether(0x8100, be16(100) + be16(0x88A8) + be16(200) + be16(0x0800) + v4),
        ether(0x8847, mpls + v4),
        ether(0x8864, b"\x11\x00\x00\x01" + be16(len(v4) + 2) + be16(0x0021) + v4),
        ether(0x8903, b"\x00\x3f" + MAC + be16(0x0800) + v4),
        ether(0x0800, ipv4(6, tcp(2000, 25), options=b"\x01\x01\x01\x00")),
        ether(0x0806, bytes(28)),
        ether(0x0800, v4)[:40],
    ]


def link_frames() -> dict[int, bytes]:
    """One frame for each other link type."""
    v4 = ipv4(6, tcp(3000, 993))
    v6 = ipv6(17, udp(50030, 50001))
    return {
        113: b"\0\0\0\x01\0\x06" + bytes(8) + be16(0x0800) + v4,
        276: be16(0x86DD) + b"\0\0\0\0\0\x02\0\x01\0\x06" + bytes(8) + v6,
        101: v6,
        228: v4,
        229: v6,
        0: (2).to_bytes(4, "little") + v4,
        108: (24).to_bytes(4, "big") + v6,
        9: b"\xff\x03" + be16(0x0057) + v6,
        50: b"\x0f\x00" + be16(0x0800) + v4,
        104: b"\x8f\x00" + be16(0x86DD) + v6,
        147: b"user-defined link type",
    }


def records(data: list[bytes], step: int = 1_000_000) -> list[writers.Record]:
    return [(TS + i * step, d, len(d) + (4 if i % 5 == 4 else 0)) for i, d in enumerate(data)]


def pb(iface: int, units: int, data: bytes, orig: int) -> bytes:
    """An obsolete pcapng Packet Block (type 2)."""
    body = struct.pack("<HHIIII", iface, 0, units >> 32, units & 0xFFFFFFFF, len(data), orig)
    body += data + b"\0" * (-len(data) % 4)
    n = len(body) + 12
    return struct.pack("<II", 2, n) + body + struct.pack("<I", n)


def captures() -> dict[str, bytes]:
    eth = frames()
    out = {
        "ethernet-le-us.pcap": writers.pcap(records(eth)),
        "ethernet-be-ns.pcap": writers.pcap(records(eth[:6]), big=True, nanosecond=True),
        "ethernet.pcap.gz": gzip.compress(writers.pcap(records(eth[:4])), mtime=0),
        "empty-header-only.pcap": writers.pcap([]),
    }
    kuznetzov = bytearray(writers.pcap([]))
    kuznetzov[:4] = struct.pack("<I", 0xA1B2CD34)
    for ts, d, orig in records(eth[:3]):
        kuznetzov += struct.pack("<IIII", ts // 10**9, 0, len(d), orig) + bytes(8) + d
    out["kuznetzov.pcap"] = bytes(kuznetzov)
    for lt, frame in link_frames().items():
        out[f"linktype-{lt}.pcap"] = writers.pcap(records([frame, frame[:9]]), linktype=lt)
    out["corrupt-length.pcap"] = writers.pcap(records(eth[:2])) + struct.pack(
        "<IIII", 1, 0, 262145, 60)
    out["cut.pcap"] = writers.pcap(records(eth[:3]))[:-7]
    ng = [writers.shb(), writers.idb(1, tsresol=9), writers.idb(101, snaplen=64, tsoffset=3),
          writers.unknown_block()]
    for i, d in enumerate(eth[:6]):
        units = writers.units_of(TS + i, 9 if i % 2 == 0 else 6)
        ng.append(writers.epb(i % 2, units, d, len(d)))
    ng += [writers.spb(eth[0]), pb(0, writers.units_of(TS + 7, 9), eth[1], len(eth[1])),
           writers.shb(big=True), writers.idb(229, big=True, tsresol=0x80 | 20),
           writers.epb(0, writers.units_of(TS, 0x80 | 20), link_frames()[229], 60, big=True),
           writers.spb(link_frames()[229], big=True)]
    out["sections.pcapng"] = b"".join(ng)
    out["sections.pcapng.gz"] = gzip.compress(out["sections.pcapng"], mtime=0)
    out["cut.pcapng"] = out["sections.pcapng"][:-5]
    return out


RULES = {
    "minimal.toml": """\
name = "minimal"
[[rule]]
name = "web"
protocols = ["tcp"]
client.tcp = ["ephemeral"]
server.tcp = [443, 80]
""",
    "shared-categories.toml": """\
name = "shared"
description = "two rules, one category"
source = "seed"

[[rule]]
name = "media-tcp"
category = "media"
protocols = ["tcp", "udp"]
client.tcp = ["50000-50059"]
client.udp = ["50000-50059"]
server.tcp = [443, "50000-59999"]
server.udp = []

[[rule]]
name = "media-udp"
category = "media"
description = "any port"
protocols = ["UDP"]
client = { udp = ["any"] }
server = { udp = [3478, " 3479 - 3481 "] }
""",
    "bad-range.toml": """\
[[rule]]
name = "x"
protocols = ["tcp"]
client.tcp = ["2-1"]
server.tcp = [70000]
""",
}


def main() -> None:
    cap_dir, rules_dir = HERE / "corpus" / "capture", HERE / "corpus" / "rules"
    for d in (cap_dir, rules_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    for name, data in captures().items():
        (cap_dir / name).write_bytes(data)
    for name, text in RULES.items():
        (rules_dir / name).write_text(text, encoding="utf-8")
    shutil.copy(ROOT / "rules" / "office365-2015.toml", rules_dir / "office365-2015.toml")
    print(f"{len(list(cap_dir.iterdir()))} capture seeds, "
          f"{len(list(rules_dir.iterdir()))} rule seeds")


if __name__ == "__main__":
    main()
