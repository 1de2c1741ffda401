"""An independent evaluation of a rule set from tshark's dissection.

tshark decodes each frame (reassembly off); the category of each packet follows from
the first IP layer and the transport header directly after it, by the plain-Python
rule evaluation. Later fragments take their datagram's category, wherever in the
capture its first fragment is.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from functools import lru_cache

from classifier.rules import RuleSet

FIELDS = [
    "frame.len", "frame.protocols", "tcp.srcport", "tcp.dstport", "udp.srcport",
    "udp.dstport", "ip.src", "ip.dst", "ip.proto", "ip.id", "ip.frag_offset", "ip.flags.mf",
    "ipv6.fraghdr.offset", "ipv6.fraghdr.more", "ipv6.fraghdr.ident", "ipv6.src", "ipv6.dst",
]

#: Layers tshark may list between an IP header and its transport header.
IPV6_EXTENSIONS = {"ipv6.hopopts", "ipv6.routing", "ipv6.dstopts", "ipv6.fraghdr"}


def available() -> bool:
    return shutil.which("tshark") is not None


@lru_cache(maxsize=4)
def frames(path: str) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", path, "-o", "ip.defragment:FALSE",
           "-o", "ipv6.defragment:FALSE", "-T", "fields", "-E", "occurrence=f",
           "-E", "separator=|"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False).stdout
    return [line.split("|") for line in out.splitlines()]


def totals(path: str) -> tuple[int, int]:
    rows = frames(path)
    return len(rows), sum(int(r[0]) for r in rows)


def categories(path: str, rules: RuleSet) -> dict[str, tuple[int, int]]:
    """(packets, bytes) per category, every category of ``rules`` included."""
    pkts: Counter[str] = Counter()
    size: Counter[str] = Counter()
    first: dict[tuple[str, ...], str] = {}
    pending: dict[tuple[str, ...], list[int]] = {}
    for v in frames(path):
        wire = int(v[0])
        protos = v[1].split(":")
        i = next((k for k, p in enumerate(protos) if p in ("ip", "ipv6")), None)
        if i is None:
            pkts["non-ip"] += 1
            size["non-ip"] += wire
            continue
        j = i + 1
        while j < len(protos) and protos[j] in IPV6_EXTENSIONS:
            j += 1
        nxt = protos[j] if j < len(protos) else ""
        v4 = protos[i] == "ip"
        key = ("4", v[6], v[7], v[8], v[9]) if v4 else ("6", v[15], v[16], v[14])
        later = v[10] not in ("", "0") if v4 else v[12] not in ("", "0")
        more = v[11] in ("1", "True") if v4 else v[13] in ("1", "True")
        if later:
            if key in first:
                cat = first[key]
            else:
                cat = "other"
                waiting = pending.setdefault(key, [0, 0])
                waiting[0] += 1
                waiting[1] += wire
        else:
            if nxt == "tcp" and v[2] and v[3]:
                cat = rules.classify_one(6, int(v[2]), int(v[3]))
            elif nxt == "udp" and v[4] and v[5]:
                cat = rules.classify_one(17, int(v[4]), int(v[5]))
            else:
                cat = "other"
            if more:
                first[key] = cat
                waiting = pending.pop(key, None)
                if waiting:
                    pkts["other"] -= waiting[0]
                    size["other"] -= waiting[1]
                    pkts[cat] += waiting[0]
                    size[cat] += waiting[1]
        pkts[cat] += 1
        size[cat] += wire
    return {c: (pkts[c], size[c]) for c in rules.categories}
