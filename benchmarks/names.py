#!/usr/bin/env python3
"""Cost of classifying by server name and address: the steady-state rate with
``rules/office365-services.toml`` plus N extra address prefixes, beside the port-only
default rule set, on the same capture, in one process, alternating, several rounds.

Usage::

    python benchmarks/names.py CAPTURE [--prefixes 2000] [--rounds 3] [--categories-only]

Prints one JSON object: per rule set the best seconds and packets/s, and the ratio
(names and prefixes / port only).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import classifier
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(HERE.parent))
    import classifier

from classifier.pipeline import Options  # noqa: E402
from classifier.rules import load_rules, parse_rules  # noqa: E402

SERVICES = HERE.parent / "rules" / "office365-services.toml"


def services_with_prefixes(n: int, seed: int = 1) -> object:
    """The services rule set with ``n`` more prefixes (IPv4 and IPv6, /16 to /28 and
    /32 to /64) spread over its Exchange, SharePoint and Common rules."""
    import tomllib

    data = tomllib.loads(SERVICES.read_text())
    rng = random.Random(seed)
    targets = [r for r in data["rule"] if r["name"] in ("exchange", "sharepoint", "common")]
    for i in range(n):
        if i % 4:
            bits = rng.randint(16, 28)
            net = ipaddress.ip_network((rng.getrandbits(32) >> (32 - bits) << (32 - bits), bits))
        else:
            bits = rng.randint(32, 64)
            net = ipaddress.ip_network((rng.getrandbits(128) >> (128 - bits) << (128 - bits),
                                        bits))
        targets[i % len(targets)].setdefault("addresses", []).append(str(net))
    return parse_rules(data, path=f"office365-services+{n}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture")
    parser.add_argument("--prefixes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--categories-only", action="store_true")
    args = parser.parse_args(argv)
    sets = {"port-only": load_rules(), "names+prefixes": services_with_prefixes(args.prefixes)}
    options = Options(details=not args.categories_only)
    # Warm up: load every kernel both rule sets use, outside the clock.
    sys.path.insert(0, str(HERE))
    from make_mix import build_mix, write_pcap

    with tempfile.TemporaryDirectory() as tmp:
        warm = str(Path(tmp) / "warm.pcap")
        write_pcap(build_mix(8000, seed=7), warm)
        for rules in sets.values():
            classifier.analyze([warm], rules=rules, jobs=1, options=options)
    best: dict[str, float] = {}
    packets = 0
    for _ in range(args.rounds):
        for name, rules in sets.items():
            start = time.perf_counter()
            result = classifier.analyze([args.capture], rules=rules, jobs=1, options=options)
            seconds = time.perf_counter() - start
            best[name] = min(best.get(name, seconds), seconds)
            packets = result.totals.packets
    out = {name: {"seconds": round(s, 3), "packets_per_s": round(packets / s)}
           for name, s in best.items()}
    out["ratio"] = round(best["port-only"] / best["names+prefixes"], 3)  # type: ignore[assignment]
    out["packets"] = packets  # type: ignore[assignment]
    out["prefixes"] = args.prefixes  # type: ignore[assignment]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
