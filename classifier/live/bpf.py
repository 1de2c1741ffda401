"""BPF filters: compiled by libpcap (through scapy) and attached in the kernel."""

from __future__ import annotations

import ctypes
import socket
import struct

from .base import CaptureSetupError

__all__ = ["SO_ATTACH_FILTER", "attach_filter", "compile_filter"]

SO_ATTACH_FILTER = 26
_INSN = 8  # struct sock_filter: code (u16), jt (u8), jf (u8), k (u32)


def compile_filter(expression: str, linktype: int) -> bytes:
    """The BPF program of a libpcap filter expression for frames of ``linktype``
    (a DLT_ value), as an array of struct sock_filter."""
    try:
        from scapy.arch.common import compile_filter as pcap_compile
        from scapy.error import Scapy_Exception
    except ImportError:
        raise CaptureSetupError(
            "--bpf needs scapy and libpcap: pip install 'o365-traffic[live]'") from None
    try:
        program = pcap_compile(expression, linktype=linktype)
    except Scapy_Exception as exc:
        text = str(exc)
        why = text[text.rfind("(") + 1:text.rfind(")")] if "(" in text else text
        raise CaptureSetupError(f"--bpf {expression!r}: {why}") from None
    except (ImportError, OSError) as exc:
        raise CaptureSetupError(f"--bpf needs libpcap: {exc}") from None
    code = ctypes.string_at(program.bf_insns, program.bf_len * _INSN)
    _free(program)
    return code


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """Attach a program made by :func:`compile_filter` to a packet socket."""
    insns = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog: the instruction count, then a pointer to the instructions.
    fprog = struct.pack("HL", len(program) // _INSN, ctypes.addressof(insns))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _free(program: object) -> None:
    try:
        from scapy.libs.winpcapy import pcap_freecode

        pcap_freecode(ctypes.byref(program))  # type: ignore[arg-type]
    except (ImportError, OSError, AttributeError):  # a small leak, once per run
        pass
