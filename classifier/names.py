"""Server names found in the traffic: TLS SNI, HTTP Host, DNS answers; and the one
payload signature rules may ask for, Microsoft's STUN extensions.

Every parser takes untrusted bytes and never raises: a malformed message gives no
name. Names are data from the wire, so :func:`clean_name` bounds them and escapes
whatever is not printable ASCII before anything else sees them; outputs that have a
markup of their own (HTML, terminal) escape again for it.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_NAME",
    "MS_STUN_ATTRIBUTES",
    "NEED_MORE",
    "clean_name",
    "dns_answers",
    "http_host",
    "ms_stun",
    "tls_sni",
]

#: The longest name kept, in characters (a DNS name has at most 253).
MAX_NAME = 253
#: A parser's answer when the message continues in bytes not seen yet.
NEED_MORE = "\x00need-more"
#: How far into a flow's first bytes a ClientHello or request header is looked for.
MAX_HELLO = 16_384

_PRINTABLE = re.compile(rb"[\x21-\x7e]")
_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"CONNECT ",
            b"PATCH ", b"TRACE ")
_HOST = re.compile(rb"\r\nhost:[ \t]*([^\r\n]*)", re.IGNORECASE)


def clean_name(raw: bytes) -> str:
    """A name from the wire as safe text: lower case, bytes outside printable ASCII
    as ``\\xNN``, at most :data:`MAX_NAME` characters (longer ones end in ``...``)."""
    out = []
    for byte in raw[: MAX_NAME + 1]:
        ch = bytes([byte])
        out.append(ch.decode().lower() if _PRINTABLE.fullmatch(ch) and byte != 0x5C
                   else f"\\x{byte:02x}")
    text = "".join(out).rstrip(".") or "."
    if len(raw) > MAX_NAME or len(text) > MAX_NAME:
        text = text[: MAX_NAME - 3] + "..."
    return text


def tls_sni(data: bytes) -> str | None:
    """The server name of a TLS ClientHello at the start of ``data`` (a flow's first
    client bytes): the name, None (no ClientHello or no SNI), or :data:`NEED_MORE`.

    The handshake message may span several TLS records and TCP segments."""
    body = bytearray()
    at = 0
    need: int | None = None
    while True:
        if len(data) < at + 5:
            return NEED_MORE if at + 5 <= MAX_HELLO else None
        if data[at] != 0x16 or data[at + 1] != 0x03:
            return None
        length = int.from_bytes(data[at + 3 : at + 5], "big")
        if length == 0:
            return None
        fragment = data[at + 5 : at + 5 + length]
        body += fragment
        if need is None and len(body) >= 4:
            if body[0] != 0x01:  # not a ClientHello
                return None
            need = 4 + int.from_bytes(body[1:4], "big")
        if need is not None and len(body) >= need:
            return _client_hello_sni(bytes(body[4:need]))
        if len(fragment) < length:  # this record continues in later segments
            return NEED_MORE if at + 5 + length <= MAX_HELLO else None
        at += 5 + length


def _client_hello_sni(hello: bytes) -> str | None:
    p = 2 + 32  # version, random
    if len(hello) < p + 1:
        return None
    p += 1 + hello[p]  # session id
    if len(hello) < p + 2:
        return None
    p += 2 + int.from_bytes(hello[p : p + 2], "big")  # cipher suites
    if len(hello) < p + 1:
        return None
    p += 1 + hello[p]  # compression methods
    if len(hello) < p + 2:
        return None
    end = min(len(hello), p + 2 + int.from_bytes(hello[p : p + 2], "big"))
    p += 2
    while p + 4 <= end:
        kind = int.from_bytes(hello[p : p + 2], "big")
        size = int.from_bytes(hello[p + 2 : p + 4], "big")
        ext = hello[p + 4 : min(end, p + 4 + size)]
        p += 4 + size
        if kind != 0:
            continue
        q = 2  # server name list length, then entries
        while q + 3 <= len(ext):
            name_type = ext[q]
            n = int.from_bytes(ext[q + 1 : q + 3], "big")
            name = ext[q + 3 : q + 3 + n]
            if name_type == 0 and name and len(name) == n:
                return clean_name(name)
            q += 3 + n
        return None
    return None


def http_host(data: bytes) -> str | None:
    """The Host header of an HTTP request at the start of ``data``: the host (without
    a port), None, or :data:`NEED_MORE` while the header block is incomplete."""
    if not data.startswith(_METHODS):
        return None
    head = data[:MAX_HELLO]
    match = _HOST.search(head)
    if match is None:
        if b"\r\n\r\n" in head or len(head) >= MAX_HELLO:
            return None
        return NEED_MORE
    if match.end() == len(head):  # the value may continue in the next segment
        return NEED_MORE
    host = match.group(1).strip()
    if host.startswith(b"["):  # an IPv6 literal
        host = host[1 : host.find(b"]")] if b"]" in host else host[1:]
    elif host.count(b":") == 1:
        host = host.split(b":", 1)[0]
    return clean_name(host) if host else None


def dns_answers(msg: bytes) -> list[tuple[int, tuple[str, ...]]]:
    """The addresses a DNS response names: (128-bit address, IPv4 mapped; the names
    leading to it, the question first, then the CNAME chain). Never raises."""
    try:
        return _dns_answers(msg)
    except (IndexError, ValueError):
        return []


def _dns_answers(msg: bytes) -> list[tuple[int, tuple[str, ...]]]:
    if len(msg) < 12 or not msg[2] & 0x80 or msg[3] & 0x0F:  # a response, no error
        return []
    qd = int.from_bytes(msg[4:6], "big")
    an = int.from_bytes(msg[6:8], "big")
    p = 12
    question = None
    for _ in range(min(qd, 4)):
        name, p = _read_name(msg, p)
        p += 4
        question = question or name
    cname: dict[str, str] = {}
    found: list[tuple[str, int]] = []
    for _ in range(min(an, 256)):
        owner, p = _read_name(msg, p)
        if p + 10 > len(msg):
            break
        rtype = int.from_bytes(msg[p : p + 2], "big")
        rdlen = int.from_bytes(msg[p + 8 : p + 10], "big")
        data_at = p + 10
        p = data_at + rdlen
        if p > len(msg):
            break
        if rtype == 1 and rdlen == 4:
            found.append((owner, (0xFFFF << 32) | int.from_bytes(msg[data_at:p], "big")))
        elif rtype == 28 and rdlen == 16:
            found.append((owner, int.from_bytes(msg[data_at:p], "big")))
        elif rtype == 5:
            target, _ = _read_name(msg, data_at)
            cname.setdefault(owner, target)
    out = []
    back = {t: o for o, t in cname.items()}
    for owner, address in found:
        chain = [owner]
        while chain[-1] in back and len(chain) < 16 and back[chain[-1]] not in chain:
            chain.append(back[chain[-1]])
        chain.reverse()  # the question first
        if question is not None and chain[0] != question:
            chain.insert(0, question)
        out.append((address, tuple(dict.fromkeys(chain))))
    return out


#: STUN attribute types of Microsoft's ICE and TURN extensions, as Microsoft's open
#: specifications define them: [MS-TURN] MS-VERSION 0x8008, MS-ALTERNATE-HOST-NAME
#: 0x8032, MS-APP-ID 0x8037, MS-SECURE-TAG 0x8039, MS-SEQUENCE-NUMBER 0x8050,
#: MS-SERVICE-QUALITY 0x8055, MS-ALT-MAPPED-ADDRESS 0x8090,
#: MS-MULTIPLEXED-TURN-SESSION-ID 0x8095; [MS-ICE2] MS-CANDIDATE-IDENTIFIER 0x8054,
#: MS-IMPLEMENTATION-VERSION 0x8070; [MS-TURNBWM] the bandwidth management attributes
#: 0x8056-0x8062 and 0x8068. IANA assigns none of them to anything else; Wireshark
#: names them so, and nDPI reads 0x8054 and 0x8070 as a Skype/Teams call.
MS_STUN_ATTRIBUTES = frozenset(
    {0x8008, 0x8032, 0x8037, 0x8039, 0x8050, 0x8054, 0x8055, 0x8068, 0x8070, 0x8090, 0x8095}
    | set(range(0x8056, 0x8063)))
#: STUN methods: Binding to ConnectionAttempt (RFC 8489, 8656, 6062).
_STUN_METHODS = 0x000C


def ms_stun(data: bytes, length: int, *, framed: bool = False) -> bool:
    """Whether a flow's first payload is a STUN message with an attribute of Microsoft's
    ICE/TURN extensions (:data:`MS_STUN_ATTRIBUTES`), the framing Skype for Business,
    Skype and Teams clients and relays open their media flows with.

    ``data``: the payload bytes captured; ``length``: the payload's length on the wire
    (a UDP datagram holds one message, exactly); ``framed``: TCP, where RFC 4571 puts
    a two-byte length before each message. The message header must be consistent
    (type, length, the attribute chain within it); attributes beyond the captured
    bytes are not seen. Never raises."""
    if framed:
        if len(data) < 2:
            return False
        frame = int.from_bytes(data[:2], "big")
        if frame + 2 > length:
            return False
        data, length = data[2 : 2 + frame], frame
    if len(data) < 20 or data[0] & 0xC0:
        return False
    kind = int.from_bytes(data[:2], "big")
    method = (kind & 0x000F) | ((kind & 0x00E0) >> 1) | ((kind & 0x3E00) >> 2)
    size = int.from_bytes(data[2:4], "big")
    if not 1 <= method <= _STUN_METHODS or size % 4 or size + 20 != length:
        return False
    end = min(len(data), length)
    p = 20
    while p + 4 <= end:
        attribute = int.from_bytes(data[p : p + 2], "big")
        if attribute in MS_STUN_ATTRIBUTES:
            return True
        p += 4 + ((int.from_bytes(data[p + 2 : p + 4], "big") + 3) & ~3)
    return False


def _read_name(msg: bytes, p: int) -> tuple[str, int]:
    """A possibly compressed name at ``p``, and the offset after it."""
    labels: list[bytes] = []
    end = None
    size = 0
    for _ in range(128):  # compression loops end here
        n = msg[p]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = p + 2
            p = ((n & 0x3F) << 8) | msg[p + 1]
            continue
        if n & 0xC0:
            raise ValueError("bad label")
        if n == 0:
            return clean_name(b".".join(labels)), (end if end is not None else p + 1)
        label = msg[p + 1 : p + 1 + n]
        if len(label) != n:
            raise ValueError("cut label")
        size += n + 1
        if size <= MAX_NAME + 1:
            labels.append(label)
        p += 1 + n
    raise ValueError("name too long")
