"""Rules compiled into lookup tables: classifying a batch is a few gathers.

Per protocol, the rules' port ranges cut 0-65535 into elementary intervals; every
port of an interval belongs to the same client and server ranges, so an interval is a
*port class* with two rule bitmasks (rules whose client side, and whose server side,
contain it). ``port_class`` maps (protocol slot, port) to its class in one gather.

A packet with ports (a, b) matches rule r when ``client[a] & server[b]`` or
``client[b] & server[a]`` has bit r; the first rule is the lowest set bit. While the
classes are few (always, for hand-written rule sets) that answer is precomputed for
every pair of classes, so a batch costs three gathers whatever the number of rules;
otherwise the bitmasks are scanned word by word.

Rules with server addresses or names (see :mod:`classifier.rules`) add a third mask:
the rules a packet's server end qualifies for, by its address class
(:class:`~classifier.prefixes.PrefixTable`) and by its flow's server name (bits the
caller passes, see :mod:`classifier.naming`). Such rule sets always scan the words.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import NamedTuple

import numpy as np

from ._jit import kernel
from .decode import FLAG_LATER_FRAGMENT, FLAG_PORTS, Headers
from .prefixes import PrefixTable, find_in_block
from .rules import PROTOCOLS, RuleSet, match_name

__all__ = ["Classes", "CompiledRules", "compile_rules"]

_PORTS = 65536
#: Largest number of port classes for which the pair table is built (its size squared).
_PAIR_TABLE_MAX = 2048
_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
_DEBRUIJN_INDEX = np.zeros(64, np.int64)
for _bit in range(64):
    _DEBRUIJN_INDEX[((1 << _bit) * 0x03F79D71B4CB0A89 % (1 << 64)) >> 58] = _bit


def lowest_bit(words: np.ndarray) -> np.ndarray:
    """Index of the lowest set bit of each uint64 (undefined where the word is 0)."""
    isolated = words & (~words + np.uint64(1))
    index: np.ndarray = _DEBRUIJN_INDEX[(isolated * _DEBRUIJN) >> np.uint64(58)]
    return index


class CompiledRules:
    """A rule set compiled for batch classification (see the module docstring)."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.categories = rules.categories
        self.other = len(self.categories) - 2
        self.non_ip = len(self.categories) - 1
        n_rules = len(rules.rules)
        words = max(1, (n_rules + 63) // 64)
        index = {c: i for i, c in enumerate(self.categories)}
        # rule index -> category id; the extra last entry is "no rule matched"
        self.rule_category = np.array(
            [index[r.category] for r in rules.rules] + [self.other], np.int32
        )
        protos = sorted({PROTOCOLS[p] for r in rules.rules for p in r.protocols})
        self.slot_of_proto = np.zeros(256, np.int64)  # slot 0: no rule can match
        for slot, proto in enumerate(protos, 1):
            self.slot_of_proto[proto] = slot
        class_rows_c = [np.zeros((1, words), np.uint64)]
        class_rows_s = [np.zeros((1, words), np.uint64)]
        port_class = np.zeros((len(protos) + 1) * _PORTS, np.int64)
        n_classes = 1
        for slot, proto in enumerate(protos, 1):
            name = next(k for k, v in PROTOCOLS.items() if v == proto)
            sides = [
                [(r_i, lo, hi) for r_i, r in enumerate(rules.rules) if name in r.protocols
                 for lo, hi in getattr(r, side)[name]]
                for side in ("client", "server")
            ]
            cuts = sorted({0, _PORTS} | {e for side in sides for _, lo, hi in side
                                         for e in (lo, hi + 1)})
            starts = np.array(cuts[:-1], np.int64)
            rows = []
            for side in sides:
                bits = np.zeros((len(starts), words), np.uint64)
                for r_i, lo, hi in side:
                    a = int(np.searchsorted(starts, lo))
                    b = int(np.searchsorted(starts, hi + 1))
                    bits[a:b, r_i // 64] |= np.uint64(1 << (r_i % 64))
                rows.append(bits)
            class_rows_c.append(rows[0])
            class_rows_s.append(rows[1])
            ports = np.arange(_PORTS)
            port_class[slot * _PORTS : (slot + 1) * _PORTS] = (
                n_classes + np.searchsorted(starts, ports, side="right") - 1
            )
            n_classes += len(starts)
        client = np.concatenate(class_rows_c)
        server = np.concatenate(class_rows_s)
        self.n_classes = n_classes
        self.port_class = port_class.astype(_smallest_uint(n_classes))
        self.pair_table: np.ndarray | None = None
        self._client = client
        self._server = server
        self.words = words
        #: Rules with address or name conditions change how a packet is matched.
        self.conditional = any(r.conditional for r in rules.rules)
        #: Rules with names or signatures: flows must be followed for what they tell.
        self.uses_names = rules.uses_names
        #: The signatures some rule asks for.
        self.signatures = frozenset(s for r in rules.rules for s in r.signatures)
        self.prefixes = PrefixTable([r.addresses for r in rules.rules])
        self._address_rules = _bits([bool(r.addresses) for r in rules.rules], words)
        self._unconditional = _bits([not r.conditional for r in rules.rules], words)
        #: The rules with name patterns or signatures: what a flow's name could add.
        self.name_rules = _bits([r.learns for r in rules.rules], words)
        self._name_cache: dict[str, np.ndarray] = {}
        self._pair_masks: tuple[np.ndarray, np.ndarray] | None = None
        self._pair_fixed = np.zeros(0, np.int32)
        if self.conditional:
            if n_classes * n_classes * words <= 1 << 20:
                # Port matches for every pair of classes: two gathers per packet.
                both = (client[:, None, :] & server[None, :, :]).reshape(-1, words)
                swapped = (client[None, :, :] & server[:, None, :]).reshape(-1, words)
                self._pair_masks = (both, swapped)
                self._pair_fixed = self._fixed_pairs(both, swapped)
            return
        if n_classes <= _PAIR_TABLE_MAX:
            self.pair_table, self._src_client = self._pair_table(client, server)
            self._pairs = self.pair_table.ravel()  # flat: one gather per packet
            # The compiled kernel's fixed types (one export serves every rule set).
            self._port_class16 = self.port_class.astype(np.uint16)
            self._pairs32 = self._pairs.astype(np.int32)

    def _fixed_pairs(self, both: np.ndarray, swapped: np.ndarray) -> np.ndarray:
        """Per pair of port classes, ``category * 4 + side + 1`` when the first rule
        the ports match has no address or name condition, or none matches (then
        neither the addresses nor a name can change the answer: the compiled match
        skips its per-rule work), else -1."""
        none = len(self.rules.rules)
        m_all = both | swapped
        rule = np.full(m_all.shape[0], none, np.int64)
        for w in range(m_all.shape[1]):
            fresh = (m_all[:, w] != 0) & (rule == none)
            if fresh.any():
                rule[fresh] = w * 64 + lowest_bit(m_all[fresh, w])
        r = np.where(rule == none, 0, rule)
        word, bit = r // 64, (r % 64).astype(np.uint64)
        free = (rule == none) | ((self._unconditional[word] >> bit) & np.uint64(1)).astype(bool)
        src = (both[np.arange(r.size), word] >> bit) & np.uint64(1)
        side = np.where(rule == none, -1, src.astype(np.int64))
        fixed = self.rule_category[rule].astype(np.int64) * 4 + side + 1
        return np.where(free, fixed, -1).astype(np.int32)

    def _pair_table(self, client: np.ndarray, server: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Category id for every (source class, destination class) pair, and which end
        the matching rule takes for the client (1 the source, 0 the destination, -1 no
        rule matched)."""
        n = self.n_classes
        none = len(self.rules.rules)
        rule = np.full((n, n), none, np.int64)
        for w in range(client.shape[1]):
            c, s = client[:, w], server[:, w]
            m = (c[:, None] & s[None, :]) | (c[None, :] & s[:, None])
            fresh = (m != 0) & (rule == none)
            rule[fresh] = w * 64 + lowest_bit(m[fresh])
        table: np.ndarray = self.rule_category[rule].astype(_smallest_uint(len(self.categories)))
        return table, self._sides(rule, np.arange(n)[:, None], np.arange(n)[None, :]).ravel()

    def _sides(self, rule: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """1 where the source (class ``a``) is the client end of ``rule``, 0 where the
        destination is, -1 where no rule matched."""
        none = len(self.rules.rules)
        r = np.where(rule == none, 0, rule)
        word, bit = r // 64, (r % 64).astype(np.uint64)
        src_client = ((self._client[a, word] & self._server[b, word]) >> bit) & np.uint64(1)
        return np.where(rule == none, -1, src_client.astype(np.int8)).astype(np.int8)

    def classify(self, h: Headers) -> np.ndarray:
        """Category id of every packet (``categories`` indexes); later fragments get
        ``other`` here and are settled by the fragment table."""
        return self.classify_with_sides(h, sides=False)[0]

    def name_bits(self, name: str) -> np.ndarray:
        """The rules whose name patterns match server ``name`` (uint64 words)."""
        bits = self._name_cache.get(name)
        if bits is None:
            flags = [any(match_name(p, name) for p in r.names) for r in self.rules.rules]
            bits = _bits(flags, self.words)
            if len(self._name_cache) >= 65_536:  # bounded: names come from the traffic
                self._name_cache.clear()
            self._name_cache[name] = bits
        return bits

    def signature_bits(self, signature: str) -> np.ndarray:
        """The rules that ask for payload ``signature`` (uint64 words)."""
        return _bits([signature in r.signatures for r in self.rules.rules], self.words)

    def classify_with_sides(self, h: Headers, *, sides: bool = True,
                            names: np.ndarray | None = None, compiled: bool = True,
                            ) -> tuple[np.ndarray, np.ndarray | None]:
        """Categories, and (with ``sides``) which end the matching rule takes for the
        client: 1 the source, 0 the destination, -1 no rule matched.

        ``names``: per packet (rows) or for all (one row), the rules its flow's server
        name qualifies for; none by default.
        """
        if self.conditional:
            return self._classify_conditional(h, names, compiled)
        if compiled and self.pair_table is not None:
            n = h.proto.shape[0]
            cat_out, side_out = np.empty(n, np.int32), np.empty(n if sides else 0, np.int8)
            classify_pairs.compiled(h.proto, h.flags, h.sport, h.dport, h.ip,
                                    self.slot_of_proto, self._port_class16, self._pairs32,
                                    self._src_client, self.n_classes, self.non_ip, sides,
                                    cat_out, side_out)
            return cat_out, side_out if sides else None
        ported = (h.flags & (FLAG_PORTS | FLAG_LATER_FRAGMENT)) == FLAG_PORTS
        base = self.slot_of_proto[h.proto]
        base *= ported
        base <<= 16  # slot * 65536: one table row per protocol slot
        a = self.port_class[base + h.sport].astype(np.intp)
        b = self.port_class[base + h.dport]
        cat: np.ndarray
        side: np.ndarray | None = None
        if self.pair_table is not None:
            a *= self.n_classes
            a += b
            cat = self._pairs[a].astype(np.int32)
            if sides:
                side = self._src_client[a]
        else:
            rule = self._scan(a, b)
            cat = self.rule_category[rule]
            if sides:
                side = self._sides(rule, a, b.astype(np.intp))
        cat[h.ip == 0] = self.non_ip
        return cat, side

    def _classify_conditional(self, h: Headers, names: np.ndarray | None, compiled: bool,
                              ) -> tuple[np.ndarray, np.ndarray]:
        classes = self.classes(h, compiled=compiled)
        if compiled and self._pair_masks is not None:
            cat, side, _ = self._first_compiled(classes, names, False)
            return cat, side
        m_src, m_dst, _, _ = self._masks(classes, names)
        cat, side = self._first(m_src, m_dst)
        cat[h.ip == 0] = self.non_ip
        return cat, side

    def classes(self, h: Headers, *, compiled: bool = True) -> Classes:
        """What matching needs of each packet: its ends' port and address classes."""
        a, b = self._port_classes(h)
        n = a.shape[0]
        if not self.prefixes.n_prefixes:
            ca, cb = np.zeros(n, np.intp), np.zeros(n, np.intp)
        elif compiled and self._pair_masks is not None:
            ca, cb = np.full(n, -1, np.intp), np.full(n, -1, np.intp)  # searched on demand
        else:
            ca = self.prefixes.classes(h.src_hi, h.src_lo, compiled=compiled)
            cb = self.prefixes.classes(h.dst_hi, h.dst_lo, compiled=compiled)
        return Classes(a, b, ca, cb, h.ip == 0, h.src_hi, h.src_lo, h.dst_hi, h.dst_lo)

    def classify_named(self, classes: Classes, *, compiled: bool = True,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Categories and client ends with no server name, and which packets a name
        could move (their category when every name condition is met differs)."""
        if compiled and self._pair_masks is not None:
            cat, side, sensitive = self._first_compiled(classes, None, True)
            sensitive &= ~classes.no_ip
            return cat, side, sensitive
        m_src, m_dst, n_src, n_dst = self._masks(classes, None, with_names=True)
        cat, side = self._first(m_src, m_dst)
        named, _ = self._first(m_src | n_src, m_dst | n_dst)
        sensitive = named != cat
        cat[classes.no_ip] = self.non_ip
        sensitive &= ~classes.no_ip
        return cat, side, sensitive

    def reclassify(self, classes: Classes, names: np.ndarray, *, compiled: bool = True,
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Categories and client ends given each packet's name bits (rows)."""
        if compiled and self._pair_masks is not None:
            cat, side, _ = self._first_compiled(classes, names, False)
            return cat, side
        m_src, m_dst, _, _ = self._masks(classes, names)
        cat, side = self._first(m_src, m_dst)
        cat[classes.no_ip] = self.non_ip
        return cat, side

    def _first_compiled(self, k: Classes, names: np.ndarray | None, sensitive: bool,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert self._pair_masks is not None
        n = k.a.shape[0]
        cat = np.empty(n, np.int32)
        side = np.empty(n, np.int8)
        sens = np.empty(n if sensitive else 0, np.bool_)
        if names is None:
            rows = np.zeros((0, self.words), np.uint64)
        elif names.ndim == 1:
            rows = np.broadcast_to(names, (n, self.words))
        else:
            rows = names
        pt = self.prefixes
        first_rules.compiled(
            k.a, k.b, k.ca, k.cb, k.src_hi, k.src_lo, k.dst_hi, k.dst_lo, pt.starts_hi,
            pt.starts_lo, pt.blocks, pt.interval_class, self._address_rules, self.n_classes,
            self._pair_masks[0], self._pair_masks[1], self._pair_fixed,
            self.prefixes.class_bits, self._unconditional, rows, self.name_rules,
            self.rule_category, len(self.rules.rules), _DEBRUIJN_INDEX, cat, side, sens)
        cat[k.no_ip] = self.non_ip
        return cat, side, sens

    def _masks(self, k: Classes, names: np.ndarray | None, *, with_names: bool = False,
               ) -> tuple[np.ndarray, ...]:
        """Rule bits (packets x words) matching with the source as the client end, and
        with the destination as the client end; with ``with_names``, also the name
        rules that would match on ports alone (what a name could add)."""
        if self._pair_masks is not None:
            pair = k.a * self.n_classes
            pair += k.b
            p_src = self._pair_masks[0][pair]
            p_dst = self._pair_masks[1][pair]
        else:
            p_src = self._client[k.a] & self._server[k.b]
            p_dst = self._client[k.b] & self._server[k.a]
        by_address = self.prefixes.class_bits
        free = self._unconditional if names is None else names | self._unconditional
        # The server end's address qualifies it: the destination's when the source
        # is the client end, the source's otherwise.
        m_src = p_src & (by_address[k.cb] | free)
        m_dst = p_dst & (by_address[k.ca] | free)
        if not with_names:
            return m_src, m_dst, m_src, m_dst
        return m_src, m_dst, p_src & self.name_rules, p_dst & self.name_rules

    def _first(self, m_src: np.ndarray, m_dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The category of the first matching rule, and whether the source is its
        client end (-1: no rule matched)."""
        n = m_src.shape[0]
        none = len(self.rules.rules)
        rule = np.full(n, none, np.int64)
        src_client = np.zeros(n, np.int8)
        for w in range(self.words):
            ms = m_src[:, w]
            m = ms | m_dst[:, w]
            fresh = m != 0
            if w:
                fresh &= rule == none
            if fresh.any():
                bit = lowest_bit(m[fresh])
                rule[fresh] = w * 64 + bit
                src_client[fresh] = (ms[fresh] >> bit.astype(np.uint64)) & np.uint64(1)
        cat = self.rule_category[rule]
        side = np.where(rule == none, -1, src_client).astype(np.int8)
        return cat, side

    def _port_classes(self, h: Headers) -> tuple[np.ndarray, np.ndarray]:
        ported = (h.flags & (FLAG_PORTS | FLAG_LATER_FRAGMENT)) == FLAG_PORTS
        base = self.slot_of_proto[h.proto]
        base *= ported
        base <<= 16
        a = self.port_class[base + h.sport].astype(np.intp)
        b = self.port_class[base + h.dport].astype(np.intp)
        return a, b

    def _scan(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The first matching rule of each packet (len(rules) where none matches)."""
        none = len(self.rules.rules)
        rule = np.full(a.shape[0], none, np.int64)
        for w in range(self._client.shape[1]):
            c, s = self._client[:, w], self._server[:, w]
            m = (c[a] & s[b]) | (c[b] & s[a])
            fresh = (m != 0) & (rule == none)
            if fresh.any():
                rule[fresh] = w * 64 + lowest_bit(m[fresh])
        return rule


#: Rule sets compiled lately, by content: a process compiles a set once, whatever the
#: number of captures or byte ranges it analyses with it (forked workers inherit it).
_COMPILED: dict[bytes, CompiledRules] = {}
_COMPILED_KEPT = 4


def compile_rules(rules: RuleSet) -> CompiledRules:
    """Compile a rule set into lookup tables (once per content: the tables are never
    changed once built)."""
    key = hashlib.blake2b(pickle.dumps(rules, protocol=5), digest_size=16).digest()
    compiled = _COMPILED.get(key)
    if compiled is None:
        compiled = CompiledRules(rules)
        if len(_COMPILED) >= _COMPILED_KEPT:
            del _COMPILED[next(iter(_COMPILED))]
        _COMPILED[key] = compiled
    return compiled


@kernel
def classify_pairs(proto, flags, sport, dport, ip, slot_of_proto, port_class, pairs,  # type: ignore[no-untyped-def]
                   src_client, n_classes, non_ip, sides, cat, side):
    """:meth:`CompiledRules.classify_with_sides` with a pair table, in one pass: each
    end's port class (the protocol's slot of the port table; slot 0 for packets
    without ports, and for later fragments, whose ports are not in them), then the
    pair's category and client end."""
    for i in range(proto.shape[0]):
        ported = (flags[i] & (FLAG_PORTS | FLAG_LATER_FRAGMENT)) == FLAG_PORTS
        base = slot_of_proto[proto[i]] << 16 if ported else 0
        pair = np.int64(port_class[base + sport[i]]) * n_classes + port_class[base + dport[i]]
        cat[i] = non_ip if ip[i] == 0 else pairs[pair]
        if sides:
            side[i] = src_client[pair]


@kernel
def first_rules(a, b, ca, cb, src_hi, src_lo, dst_hi, dst_lo, starts_hi, starts_lo, blocks,  # type: ignore[no-untyped-def]
                interval_class, addr_rules, n_classes, pair_src, pair_dst, pair_fixed,
                by_address, free, names, name_rules, rule_category, none, debruijn, out_cat,
                out_side, out_sens):
    """The conditional match of :class:`CompiledRules` per packet, compiled: the first
    rule's category, whether the source is its client end, and (``out_sens`` not
    empty) whether a name could change the category. ``names``: per-packet name bits,
    or no rows. An end's address class (``ca``, ``cb``; -1 not known yet) is searched
    only when a rule with addresses matches the packet's ports, and kept."""
    words = free.shape[0]
    per_packet = names.shape[0] > 0
    want = out_sens.shape[0] > 0
    one = np.uint64(1)
    zero = np.uint64(0)
    for i in range(a.shape[0]):
        pair = a[i] * n_classes + b[i]
        fixed = pair_fixed[pair]
        if fixed >= 0:  # no conditional rule matches these ports
            out_cat[i] = fixed >> 2
            out_side[i] = (fixed & 3) - 1
            if want:
                out_sens[i] = False
            continue
        rule = none
        named = none
        src_client = 0
        for w in range(words):
            f = free[w]
            if per_packet:
                f |= names[i, w]
            ps = pair_src[pair, w]
            pd = pair_dst[pair, w]
            at_dst = zero
            if ps & addr_rules[w]:
                if cb[i] < 0:
                    cb[i] = interval_class[find_in_block(starts_hi, starts_lo, blocks,
                                                         dst_hi[i], dst_lo[i])]
                at_dst = by_address[cb[i], w]
            at_src = zero
            if pd & addr_rules[w]:
                if ca[i] < 0:
                    ca[i] = interval_class[find_in_block(starts_hi, starts_lo, blocks,
                                                         src_hi[i], src_lo[i])]
                at_src = by_address[ca[i], w]
            ms = ps & (at_dst | f)
            m = ms | (pd & (at_src | f))
            if rule == none and m != 0:
                bit = debruijn[((m & (~m + one)) * np.uint64(0x03F79D71B4CB0A89)) >> np.uint64(58)]
                rule = w * 64 + bit
                src_client = 1 if (ms >> np.uint64(bit)) & one else 0
            if want and named == none:
                mn = m | ((ps | pd) & name_rules[w])
                if mn != 0:
                    named = w * 64 + debruijn[
                        ((mn & (~mn + one)) * np.uint64(0x03F79D71B4CB0A89)) >> np.uint64(58)]
            if rule != none and (named != none or not want):
                break
        out_cat[i] = rule_category[rule]
        out_side[i] = -1 if rule == none else src_client
        if want:
            out_sens[i] = rule_category[named] != rule_category[rule]


class Classes(NamedTuple):
    """Per packet: source and destination port classes, address classes (-1: not
    searched yet), no IP, and the addresses (for the searches still to come)."""

    a: np.ndarray
    b: np.ndarray
    ca: np.ndarray
    cb: np.ndarray
    no_ip: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray

    def take(self, index: np.ndarray) -> Classes:
        return Classes(*(col[index] for col in self))


def _bits(flags: list[bool], words: int) -> np.ndarray:
    """A bitmask (uint64 words) with bit r set where ``flags[r]``."""
    out = np.zeros(words, np.uint64)
    for r, flag in enumerate(flags):
        if flag:
            out[r // 64] |= np.uint64(1 << (r % 64))
    return out


def _smallest_uint(count: int) -> type[np.unsignedinteger]:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if count <= np.iinfo(dtype).max + 1:
            return dtype
    return np.uint64
