"""The portable fallback: packets read one at a time through scapy's listening socket
(libpcap or a packet socket, whatever scapy uses on this system), gathered into the
same batch columns."""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from typing import Any

import numpy as np

from ..sources.batch import BATCH_BYTES, MAX_PACKETS, Batch
from .base import CaptureSetupError, LiveSource, LiveStats, interface_index, open_failure

__all__ = ["ScapySource"]

SOL_PACKET = 263
PACKET_STATISTICS = 6
LINKTYPE_ETHERNET = 1


class ScapySource(LiveSource):
    """Packets of one interface through scapy (Ethernet frames)."""

    backend = "scapy"

    def __init__(self, interface: str, *, bpf: str | None = None,
                 promiscuous: bool = True) -> None:
        if interface == "any":
            raise CaptureSetupError("-i any needs the af_packet backend")
        interface_index(interface)
        try:
            import scapy.arch  # noqa: F401  (chooses the platform's sockets)
            from scapy.config import conf
            from scapy.error import log_runtime
        except ImportError:
            raise CaptureSetupError(
                "--backend scapy needs scapy: pip install 'o365-traffic[live]'") from None
        self.interface = interface
        self.filter = bpf
        self.linktype = LINKTYPE_ETHERNET
        self.stats = LiveStats()
        # Only the raw bytes are used: scapy's guesses at packet classes are noise here.
        log_runtime.setLevel(logging.ERROR)
        try:
            self.sock: Any = conf.L2listen(iface=interface, filter=bpf, promisc=promiscuous)
        except PermissionError as exc:
            raise open_failure(interface) from exc
        except Exception as exc:  # scapy reports a bad filter with its own exception
            raise CaptureSetupError(f"--bpf {bpf!r}: {exc}" if bpf else str(exc)) from None

    def next_batch(self, timeout: float) -> Batch | None:
        deadline = time.monotonic() + timeout
        frames: list[bytes] = []
        stamps: list[float] = []
        size = 0
        wait = timeout
        while len(frames) < MAX_PACKETS and size < BATCH_BYTES:
            ready, _, _ = select.select([self.sock], [], [], max(wait, 0.0))
            if not ready:
                break
            _cls, data, ts = self.sock.recv_raw()
            if data:
                frames.append(data)
                stamps.append(ts if ts is not None else time.time())
                size += len(data)
            wait = 0.0 if frames else deadline - time.monotonic()
        if not frames:
            return None
        caplen = np.fromiter((len(f) for f in frames), np.int64, len(frames))
        offset = np.zeros(len(frames), np.int64)
        np.cumsum(caplen[:-1], out=offset[1:])
        # Writable, as the ring's batches are: the kernels were loaded for that type.
        buf = np.frombuffer(bytearray(b"".join(frames)), np.uint8)
        ts_ns = (np.array(stamps, np.float64) * 1e9).astype(np.int64)
        return Batch(buf, offset, caplen, caplen.copy(), ts_ns,
                     np.full(len(frames), self.linktype, np.int64), 0)

    def kernel_counts(self) -> tuple[int, int]:
        ins = getattr(self.sock, "ins", None)
        if not isinstance(ins, socket.socket) or ins.family != socket.AF_PACKET:
            return 0, 0
        packets, drops = struct.unpack("2I", ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        return packets, drops

    def close(self) -> None:
        self.sock.close()
