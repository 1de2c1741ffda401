"""Compiled kernels, loaded only when they pay off.

The few loops that walk variable-length data (capture records, header chains) are
written once, as plain Python over numpy arrays in the subset numba compiles. Large
inputs run the compiled version (cached on disk, so a second run pays no
compilation); tiny inputs run the same source interpreted, which skips importing
numba and keeps a small capture's whole run short.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["COMPILE_THRESHOLD", "Kernel", "kernel"]

#: Inputs below this many bytes run interpreted; importing numba costs more than it saves.
COMPILE_THRESHOLD = int(os.environ.get("O365_TRAFFIC_COMPILE_THRESHOLD", 1 << 20))


_context_ready = False


def _numba() -> types.ModuleType:
    """numba (deferred: importing it costs about 0.3 s), its compiler set up once.

    Setting up numba's compiler imports ``numba.np.arraymath``, which imports
    scipy.linalg (about 0.2 s of every run) only to learn whether NumPy linear
    algebra can be compiled. No kernel here uses it, so unless scipy.linalg is already
    imported, it is hidden for that moment: numba then compiles without linear
    algebra in this process.
    """
    global _context_ready
    import numba

    if not _context_ready:
        _context_ready = True
        hide = "scipy.linalg" not in sys.modules and "numba.np.arraymath" not in sys.modules
        if hide:
            sys.modules["scipy.linalg"] = None  # type: ignore[assignment]  # import fails
        try:
            from numba.core.registry import cpu_target

            cpu_target.target_context.refresh()
        finally:
            if hide and "scipy.linalg" in sys.modules and sys.modules["scipy.linalg"] is None:
                del sys.modules["scipy.linalg"]
    return numba


class Kernel:
    """A kernel with an interpreted and a lazily compiled form of the same source."""

    def __init__(self, func: Callable[..., Any], *, inline: bool = False,
                 interpreted: Callable[..., Any] | None = None) -> None:
        self.py = func
        self.inline = inline
        self._interpreted = interpreted or func
        self._compiled: Callable[..., Any] | None = None
        self.__name__ = func.__name__
        self.__doc__ = func.__doc__

    @property
    def compiled(self) -> Callable[..., Any]:
        if self._compiled is None:
            numba = _numba()

            # Kernels calling kernels: the compiled caller must see compiled callees.
            glb = dict(self.py.__globals__)
            for name in self.py.__code__.co_names:
                if isinstance(glb.get(name), Kernel):
                    glb[name] = glb[name].compiled
            func = types.FunctionType(self.py.__code__, glb, self.py.__name__,
                                      self.py.__defaults__, self.py.__closure__)
            func.__qualname__ = self.py.__qualname__
            func.__module__ = self.py.__module__
            options: dict[str, Any] = {"inline": "always"} if self.inline else {}
            self._compiled = numba.njit(cache=True, nogil=True, **options)(func)
        return self._compiled

    def __call__(self, *args: Any) -> Any:
        """Run interpreted: this is how kernels call kernels in interpreted mode."""
        return self._interpreted(*args)

    def select(self, compiled: bool) -> Callable[..., Any]:
        """The compiled kernel or its interpreted source.

        Kernels take the byte buffer first; interpreted, it is passed as a memoryview
        so that indexing yields Python ints (numpy uint8 scalars would wrap on shifts).
        """
        if compiled:
            return self.compiled
        py = self._interpreted

        def interpreted(buf: Any, *args: Any) -> Any:
            return py(memoryview(buf), *args)

        return interpreted


def kernel(func: Callable[..., Any] | None = None, *, inline: bool = False,
           interpreted: Callable[..., Any] | None = None) -> Any:
    """Mark a module-level function as a kernel (see the module docstring).

    ``inline=True`` inlines it into compiled callers: a per-packet helper called from
    a record walk then costs no call. ``interpreted`` is a plain-Python equivalent to
    run instead of the source when not compiled.
    """
    if func is None:
        return lambda f: Kernel(f, inline=inline, interpreted=interpreted)
    return Kernel(func)
