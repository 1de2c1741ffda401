#!/usr/bin/env python3
"""Cross-check the dpkt reference decoder against Wireshark's dissectors, packet by packet.

For every packet, tshark (IP defragmentation off) gives the protocol stack and the
first TCP/UDP ports; the category follows from them with the same rules as the dpkt
loop: no ``ip``/``ipv6`` layer -> ``non-ip``; the layer after the first IP layer (past
IPv6 extension headers) is TCP/UDP with ports -> ``RuleSet.classify_one``; otherwise
``other``; non-first fragments take their first fragment's category when it came
earlier (packet-by-packet comparison cannot move counts back, so both sides use the
"earlier only" form here; the moving of later fragments is covered by the samples).
Differences are printed per file with the first few packet numbers.

Expected differences, where the analyzer's rules are deliberately narrower than
Wireshark: link types it does not decode (PPP 9, Cisco HDLC 104, ...) and EtherTypes it
does not follow (Cisco FabricPath 0x8903, ...) are ``non-ip`` here, IP for tshark.

Usage::

    python benchmarks/peers/crosscheck_tshark.py CAPTURE... (or a directory)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

try:
    from classifier.rules import NON_IP, OTHER, RuleSet, load_rules
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from classifier.rules import NON_IP, OTHER, RuleSet, load_rules

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.peers import dpkt_loop
from benchmarks.peers._tally import FIRST, LATER, Tally

FIELDS = [
    "frame.protocols", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport",
    "ip.src", "ip.dst", "ip.proto", "ip.id", "ip.frag_offset", "ip.flags.mf",
    "ipv6.src", "ipv6.dst", "ipv6.fraghdr.nxt", "ipv6.fraghdr.ident",
    "ipv6.fraghdr.offset", "ipv6.fraghdr.more",
]


def tshark_categories(path: str, rules: RuleSet) -> list[str]:
    cmd = ["tshark", "-n", "-r", path, "-o", "ip.defragment:FALSE",
           "-o", "ipv6.defragment:FALSE", "-T", "fields", "-E", "occurrence=f",
           "-E", "separator=|"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    cats: list[str] = []
    first: dict[tuple[str, ...], str] = {}
    for line in out.splitlines():
        v = line.split("|")
        protos = v[0].split(":")
        i = next((k for k, p in enumerate(protos) if p in ("ip", "ipv6")), None)
        if i is None:
            cats.append(NON_IP)
            continue
        j = i + 1
        while j < len(protos) and protos[j].startswith("ipv6."):
            j += 1
        upper = protos[j] if j < len(protos) else ""
        v4 = protos[i] == "ip"
        key = ("4", v[5], v[6], v[7], v[8]) if v4 else ("6", v[11], v[12], v[13], v[14])
        later = v[9] not in ("", "0") if v4 else v[15] not in ("", "0")
        more = v[10] in ("1", "True") if v4 else v[16] in ("1", "True")
        if later:
            cats.append(first.get(key, OTHER))
            continue
        if upper == "tcp" and v[1] and v[2]:
            cat = rules.classify_one(6, int(v[1]), int(v[2]))
        elif upper == "udp" and v[3] and v[4]:
            cat = rules.classify_one(17, int(v[3]), int(v[4]))
        else:
            cat = OTHER
        if more:
            first[key] = cat
        cats.append(cat)
    return cats


def reference_categories(path: str, rules: RuleSet) -> list[str]:
    out: list[str] = []
    first: dict[object, str] = {}
    result = dpkt_loop.Result(Tally(()))
    with dpkt_loop._open(path) as f:
        head = f.read(4)
        f.seek(0)
        records = (dpkt_loop._pcapng_records(f, result) if head == dpkt_loop.PCAPNG_SHB
                   else dpkt_loop._pcap_records(f, result))
        for link, little, data, _ in records:
            kind, off = dpkt_loop.link_decoder(link, little)(data)
            if kind == 0:
                out.append(NON_IP)
                continue
            cat, _, role, key = dpkt_loop.ip_category(data, kind, off, rules.classify_one)
            if role == LATER:
                cat = first.get(key, OTHER)
            elif role == FIRST:
                first[key] = cat
            out.append(cat)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    files: list[str] = []
    for a in args:
        p = Path(a)
        files += sorted(str(f) for f in p.iterdir() if f.is_file()) if p.is_dir() else [a]
    rules = load_rules()
    differing = 0
    for path in files:
        try:
            ours = reference_categories(path, rules)
        except ValueError as exc:
            print(f"SKIP {path}: {exc}")
            continue
        theirs = tshark_categories(path, rules)
        if len(ours) != len(theirs):
            print(f"COUNT {path}: reference {len(ours)} packets, tshark {len(theirs)}")
            differing += 1
            continue
        diffs = [(n + 1, t, o) for n, (t, o) in enumerate(zip(theirs, ours, strict=True))
                 if t != o]
        if diffs:
            differing += 1
            shown = ", ".join(f"#{n} tshark {t} / reference {o}" for n, t, o in diffs[:3])
            print(f"DIFF {path}: {len(diffs)} of {len(ours)} packets ({shown})")
    print(f"{len(files)} files, {differing} with differences")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
