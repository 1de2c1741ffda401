#!/usr/bin/env python3
"""Benchmark peer: the same classification as a plain scapy script would do it.

``scapy.utils.PcapReader`` (pcap or pcapng) dissects every record into layers; the loop
finds the first IPv4/IPv6 layer, reads the ports of the TCP/UDP layer above it and
applies ``RuleSet.classify_one``. Bytes are the wire length (``pkt.wirelen``);
fragments follow the same rule as the dpkt loop (see ``_tally.Tally``). Frames without
an IP layer are ``non-ip``; IP without TCP/UDP ports is ``other``.

scapy is slow, so the benchmark runs it on the first ``--limit`` packets (20 000 by
default) and reports its rate; the runner extrapolates from that. It is a benchmark
peer, not a reference decoder: scapy's own choices (which link types and tunnels it
dissects, how it treats a cut header) decide odd frames. On the traffic of
``benchmarks/make_mix.py`` it agrees with the dpkt loop packet for packet.

Usage::

    python benchmarks/peers/scapy_loop.py CAPTURE [--limit 20000] [--rules FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

try:
    from classifier.rules import NON_IP, OTHER, RuleSet, load_rules
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from classifier.rules import NON_IP, OTHER, RuleSet, load_rules

try:
    from ._tally import FIRST, LATER, NONE, FragKey, Tally
except ImportError:  # run as a script
    from _tally import FIRST, LATER, NONE, FragKey, Tally  # type: ignore[no-redef]

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.packet import Packet
from scapy.utils import PcapReader

__all__ = ["count_file", "packet_category"]

DEFAULT_LIMIT = 20_000


def packet_category(pkt: Packet, rules: RuleSet) -> tuple[str, int, FragKey | None]:
    """Category of one dissected packet, its fragment role and key."""
    layer: Any = pkt
    while layer and not isinstance(layer, (IP, IPv6)):
        layer = layer.payload
    if not layer:
        return NON_IP, NONE, None
    role, key = NONE, None
    if isinstance(layer, IP):
        if layer.flags.MF or layer.frag:
            key = (4, layer.src, layer.dst, layer.proto, layer.id)
            if layer.frag:
                return OTHER, LATER, key
            role = FIRST
        l4 = layer.payload
    else:
        l4 = layer.payload
        while l4 and not isinstance(l4, (TCP, UDP)):
            if isinstance(l4, IPv6ExtHdrFragment):
                key = (6, layer.src, layer.dst, l4.nh, l4.id)
                if l4.offset:
                    return OTHER, LATER, key
                if l4.m:
                    role = FIRST
                else:
                    key = None
            elif l4.name.startswith("IPv6 Extension Header"):
                pass
            else:
                break
            l4 = l4.payload
    if isinstance(l4, (TCP, UDP)) and l4.sport is not None and l4.dport is not None:
        proto = 6 if isinstance(l4, TCP) else 17
        return rules.classify_one(proto, int(l4.sport), int(l4.dport)), role, key
    return OTHER, role, key


def count_file(path: str, rules: RuleSet, limit: int | None = DEFAULT_LIMIT) -> Tally:
    """Count the first ``limit`` packets (all when None) of a capture per category."""
    tally = Tally(rules.categories)
    with PcapReader(path) as reader:
        for n, pkt in enumerate(reader):
            if limit is not None and n >= limit:
                break
            wire = pkt.wirelen if pkt.wirelen is not None else len(pkt)
            try:
                cat, role, key = packet_category(pkt, rules)
            except Exception:  # scapy may stumble on a field of an odd frame
                cat, role, key = OTHER, NONE, None
            tally.add(cat, wire, role, key)
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify a capture with a scapy loop.")
    parser.add_argument("capture")
    parser.add_argument("--rules", help="rule set file (default: the shipped 2015 table)")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                        help="packets to read (0: all); default %(default)s")
    args = parser.parse_args(argv)
    rules = load_rules(args.rules)
    start = time.perf_counter()
    try:
        tally = count_file(args.capture, rules, args.limit or None)
    except (OSError, ValueError) as exc:
        print(f"scapy_loop: {args.capture}: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    import scapy

    out = tally.as_dict()
    out["run"] = {
        "tool": f"scapy {scapy.VERSION}",
        "limit": args.limit or None,
        "seconds": round(elapsed, 6),
        "packets_per_s": round(tally.packets / elapsed, 1) if elapsed > 0 else None,
        "bytes_per_s": round(tally.bytes / elapsed, 1) if elapsed > 0 else None,
    }
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
