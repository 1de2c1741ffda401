"""The kernels compiled ahead of time, into the extension module ``classifier._kernels``.

Installing the package builds it (``hatch_build.py``); ``python -m classifier._aot
[DIR]`` builds it again, into the package's directory by default, after a kernel has
been edited in a source checkout. Each kernel is exported once, for the argument types
the pipeline passes it (:data:`KERNELS`), under a name that carries those types and
the kernel's fingerprint (:func:`classifier._jit.export_prefix`); :mod:`classifier._jit`
uses an export only when both match the call, and numba's just-in-time compiler
otherwise, so a stale or partial module is never wrong, only slower to start.

The machine code is built for the CPU it is built on, as numba's just-in-time code is
(``O365_TRAFFIC_AOT_CPU=generic`` builds portable code instead).
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any

from ._jit import Kernel, _numba, export_prefix

__all__ = ["KERNELS", "build", "numba_type"]

# Parameter types, written as classifier._jit.arg_key writes an argument's type:
# <dtype><ndim><c: contiguous><w: writable | r: read-only (takes writable too)>.
BYTES = "uint81cr"  # a capture's or ring's bytes, never written
U8, I8, U16, I32, U32 = "uint81cw", "int81cw", "uint161cw", "int321cw", "uint321cw"
I64, U64, BOOL = "int641cw", "uint641cw", "bool1cw"
I64_2, I8_2, U64_2, I32_2 = "int642cw", "int82cw", "uint642cw", "int322cw"
I64_3 = "int643cw"
INT, FLAG = "i", "b"

#: The header columns' types (classifier.decode.Headers), in field order.
HEADERS = (U8, U8, U16, U16, U8, U32, U64, U64, U64, U64, U8, U8, I32, U8, I32, I32)

#: Every kernel the pipeline calls from Python, with its parameters' types.
KERNELS: dict[str, tuple[str, ...]] = {
    "classifier.sources.pcap:walk_pcap":
        (BYTES, INT, INT, FLAG, INT, INT, INT, INT, I64, I64, I64, I64, I64, *HEADERS),
    "classifier.sources.pcap:find_record": (BYTES, INT, FLAG, INT, INT, INT),
    "classifier.sources.pcapng:walk_pcapng":
        (BYTES, INT, INT, FLAG, INT, I64, I64, INT, I64, I64, I64, I64, I64, I64, *HEADERS),
    "classifier.sources.pcapng:find_block": (BYTES, INT, FLAG, INT, INT),
    "classifier.decode:decode_packets": (BYTES, I64, I64, I64, INT, INT, *HEADERS),
    "classifier.measures:tally": (I32, I64, I64, U8, I64, I64, I64, I64, I64),
    "classifier.measures:count_details":
        (I32, I64, U64, U64, U64, U64, U8, U8, BOOL, U64, U64, BOOL, I8, I64, I64, I64_3,
         I64_3, I64_3, I64_3, I64),
    "classifier.fragments:match_within":
        (U8, U8, U64, U64, U64, U64, U8, U32, I32, U16, U16, I8, I64),
    "classifier.flows:place_flows": (I64_2, INT, I64),
    "classifier.flows:find_flows": (I64_2, I64, I64_2, INT),
    "classifier.flows:update_flows":
        (U8, I64, I64, I64, I64, U16, U16, I8, U8, I32, INT, I64, I64, U8, U8, I32, I64, I64,
         I64_2, I64, I64_2, I64_2, I8_2, I64_2, INT, INT, INT, I64_2, I64_2, I8_2, I64_2),
    "classifier.prefixes:find_intervals": (U64, U64, I32_2, U64, U64, I64),
    "classifier.lookup:classify_pairs":
        (U8, U8, U16, U16, U8, I64, U16, I32, I8, INT, INT, FLAG, I32, I8),
    "classifier.lookup:first_rules":
        (I64, I64, I64, I64, U64, U64, U64, U64, U64, U64, I32_2, I32, U64, INT, U64_2, U64_2,
         I32, U64_2, U64, U64_2, U64, I32, INT, I64, I32, I8, BOOL),
    "classifier.naming:follow_flows":
        (BYTES, U8, I64, I64, I64, I64, U16, U16, U8, I64, I64, I32, I64, I32, I64, I64, I64,
         I64_2, I64, I64, I64, INT, INT, I64, I64, I64, I64),
    "classifier.live.writer:pack_records": (BYTES, I64, I64, I64, I64, U8),
    "classifier.live.ring:walk_block": (BYTES, INT, FLAG, U8, INT, I64, I64, I64, I64, INT),
}


def numba_type(param: str) -> Any:
    """The numba type of a parameter written as in :data:`KERNELS`."""
    from numba import types as nt

    if param == INT:
        return nt.int64
    if param == FLAG:
        return nt.boolean
    if param == "f":
        return nt.float64
    dtype, ndim, layout, access = param[:-3], int(param[-3]), param[-2], param[-1]
    return nt.Array(getattr(nt, "boolean" if dtype == "bool" else dtype), ndim,
                    "C" if layout == "c" else "A", readonly=access == "r")


def kernel_of(ref: str) -> Kernel:
    module, name = ref.split(":")
    found = getattr(importlib.import_module(module), name)
    if not isinstance(found, Kernel):
        raise TypeError(f"{ref} is not a kernel")
    return found


def build(output_dir: str | None = None, *, cpu: str | None = None) -> str:
    """Compile every kernel of :data:`KERNELS` into one extension module in
    ``output_dir`` (default: the package's directory); returns the module's path."""
    _numba()
    from numba import pycc
    from numba.pycc import compiler

    cc: Any = pycc.CC("_kernels")  # type: ignore[attr-defined,no-untyped-call]
    cc.output_dir = output_dir or os.path.dirname(os.path.abspath(__file__))
    cc.target_cpu = cpu or os.environ.get("O365_TRAFFIC_AOT_CPU", "host")
    for ref, params in KERNELS.items():
        k = kernel_of(ref)
        name = export_prefix(k) + "_".join(params)
        cc.export(name, tuple(numba_type(p) for p in params))(k.python)
    flags = compiler.Flags  # type: ignore[attr-defined]
    # The exports release the GIL while they run, as the just-in-time kernels do
    # (nogil): another thread (a process pool's, taking in a result) runs meanwhile.
    # pycc has no option for it; its compiler reads the flags from this name.
    compiler.Flags = _releasing_gil(flags)  # type: ignore[attr-defined]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba announces pycc's eventual replacement
            cc.compile()
    finally:
        compiler.Flags = flags  # type: ignore[attr-defined]
    return str(os.path.join(cc.output_dir, cc.output_file))


def _releasing_gil(flags: Any) -> Any:
    class Flags(flags):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.release_gil = True

    return Flags


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else None))
