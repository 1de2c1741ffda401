"""Compiled kernels, loaded only when they pay off.

The few loops that walk variable-length data (capture records, header chains) are
written once, as plain Python over numpy arrays in the subset numba compiles. Large
inputs run the compiled version (cached on disk, so a second run pays no
compilation); tiny inputs run the same source interpreted, which skips importing
numba and keeps a small capture's whole run short.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["COMPILE_THRESHOLD", "Kernel", "kernel"]

#: Inputs below this many bytes run interpreted; importing numba costs more than it saves.
COMPILE_THRESHOLD = int(os.environ.get("O365_TRAFFIC_COMPILE_THRESHOLD", 1 << 20))


class Kernel:
    """A kernel with an interpreted and a lazily compiled form of the same source."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.py = func
        self._compiled: Callable[..., Any] | None = None
        self.__name__ = func.__name__
        self.__doc__ = func.__doc__

    @property
    def compiled(self) -> Callable[..., Any]:
        if self._compiled is None:
            import numba

            self._compiled = numba.njit(cache=True, nogil=True)(self.py)
        return self._compiled

    def __call__(self, *args: Any) -> Any:
        return self.compiled(*args)

    def select(self, compiled: bool) -> Callable[..., Any]:
        """The compiled kernel or its interpreted source.

        Kernels take the byte buffer first; interpreted, it is passed as a memoryview
        so that indexing yields Python ints (numpy uint8 scalars would wrap on shifts).
        """
        if compiled:
            return self.compiled
        py = self.py

        def interpreted(buf: Any, *args: Any) -> Any:
            return py(memoryview(buf), *args)

        return interpreted


def kernel(func: Callable[..., Any]) -> Kernel:
    """Mark a module-level function as a kernel (see the module docstring)."""
    return Kernel(func)
