"""Compiled kernels, loaded only when they pay off.

The few loops that walk variable-length data (capture records, header chains) are
written once, as plain Python over numpy arrays in the subset numba compiles. Large
inputs run the compiled version; tiny inputs run the same source interpreted, which
skips importing numba and keeps a small capture's whole run short.

The compiled version comes, in order of preference, from:

1. the extension module ``classifier._kernels`` that installing the package builds
   ahead of time (:mod:`classifier._aot`): it loads in a millisecond, where
   importing numba and loading its cache takes about half a second of every run;
2. numba's just-in-time compiler, cached on disk, so that a second run pays no
   compilation. This serves any call the extension module does not cover: a module
   built from other sources than the running ones (each export's name carries a
   fingerprint of its source), argument types it was not built for, or no module.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import sys
import types
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["COMPILE_THRESHOLD", "Kernel", "kernel"]

#: Inputs below this many bytes run interpreted; importing numba costs more than it saves.
COMPILE_THRESHOLD = int(os.environ.get("O365_TRAFFIC_COMPILE_THRESHOLD", 1 << 20))
#: ``0`` ignores the ahead-of-time module (to compare it with numba's compiler).
USE_AOT = os.environ.get("O365_TRAFFIC_AOT", "1") != "0"
#: The ahead-of-time module's import name.
AOT_MODULE = "classifier._kernels"


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


# Scalar argument kinds; array kinds are non-negative (see arg_key).
_INT, _FLAG, _FLOAT = -1, -2, -3
_SCALARS = {"i": _INT, "b": _FLAG, "f": _FLOAT}


#: numpy's array flag bits (``ndarray.flags.num``; NPY_ARRAY_* in its C API).
_C_CONTIGUOUS, _ALIGNED, _WRITEABLE = 0x1, 0x100, 0x400


def arg_key(arg: Any) -> int | None:
    """How an argument is typed, as a small integer: ``(dtype number << 8) | (ndim << 2)
    | (contiguous << 1) | writable`` for an aligned array in the machine's byte order, a
    negative kind for an integer, a flag or a float, None for anything else. (Cheap: it
    is taken for every argument of every call, so the common types are tested first,
    by identity, and an array's flags are read as one integer.)"""
    kind = type(arg)
    if kind is np.ndarray:
        flags = arg.flags.num
        dtype = arg.dtype
        if not (flags & _ALIGNED and dtype.isnative):
            return None  # the exports assume aligned values in the machine's byte order
        key: int = ((dtype.num << 8) | (arg.ndim << 2) | ((flags & _C_CONTIGUOUS) << 1)
                    | bool(flags & _WRITEABLE))
        return key
    if kind is int:
        return _INT
    if kind is bool:
        return _FLAG
    if isinstance(arg, bool | np.bool_):
        return _FLAG
    if isinstance(arg, int | np.integer):
        return _INT
    if isinstance(arg, float | np.floating):
        return _FLOAT
    return None


def slot_key(slot: str) -> int:
    """The key of a parameter type as the exports' names spell it: ``i``, ``b``, ``f``
    for scalars; ``<dtype><ndim><c|a><w|r>`` for arrays (contiguous or any layout,
    writable or read-only)."""
    if slot in _SCALARS:
        return _SCALARS[slot]
    dtype, ndim, layout, access = slot[:-3], int(slot[-3]), slot[-2], slot[-1]
    return ((np.dtype(dtype).num << 8) | (ndim << 2) | ((layout == "c") << 1)
            | (access == "w"))


def _accepts(slot: int, key: int | None) -> bool:
    """Whether an export's parameter (its :func:`slot_key`) takes an argument typed
    ``key``: a read-only parameter takes a writable array too, an any-layout one a
    contiguous one; nothing else differs."""
    if key is None:
        return False
    if slot < 0 or key < 0:
        return slot == key
    return (slot >> 2) == (key >> 2) and not (slot & ~key & 3)


def fingerprint(kernel: Kernel) -> str:
    """A digest of what a compiled kernel is made of: its bytecode and constants, the
    module-level values it reads, and the same of the kernels it calls. An
    ahead-of-time export is used only while the running sources give the same digest,
    so an edited kernel never runs stale machine code."""
    h = hashlib.sha256(f"{sys.version_info[:2]} numpy {np.__version__.split('.')[0]}".encode())
    seen: set[int] = set()

    def code(co: types.CodeType, glb: dict[str, Any]) -> None:
        h.update(co.co_code)
        h.update(repr((co.co_names, co.co_varnames, co.co_argcount)).encode())
        for const in co.co_consts:
            if isinstance(const, types.CodeType):
                code(const, glb)
            else:
                h.update(repr(const).encode())
        for name in co.co_names:
            value = glb.get(name)
            if isinstance(value, Kernel):
                visit(value)
            elif isinstance(value, int | float | str | bytes | tuple | np.number):
                h.update(f"{name}={value!r}".encode())
            elif isinstance(value, types.ModuleType):
                h.update(f"{name}:{value.__name__}".encode())

    def visit(k: Kernel) -> None:
        if id(k) in seen:
            return
        seen.add(id(k))
        h.update(f"{k.py.__module__}.{k.__name__}{k.inline}{k.py.__defaults__!r}".encode())
        code(k.py.__code__, k.py.__globals__)

    visit(kernel)
    return h.hexdigest()[:16]


def export_prefix(kernel: Kernel) -> str:
    """The start of the names under which the ahead-of-time module exports ``kernel``
    built from the running sources; the argument keys follow, joined by ``_``."""
    return f"{kernel.py.__module__.replace('.', '_')}_{kernel.__name__}__{fingerprint(kernel)}__"


_aot_module: types.ModuleType | bool | None = False  # False: not looked for yet


def _aot() -> types.ModuleType | None:
    global _aot_module
    if _aot_module is False:
        _aot_module = None
        if USE_AOT:
            with contextlib.suppress(ImportError):
                _aot_module = importlib.import_module(AOT_MODULE)
    return _aot_module  # type: ignore[return-value]


class _Dispatch:
    """Calls the ahead-of-time export made for the arguments' types, or else the
    just-in-time kernel. The exports do not check their arguments (a wrong dtype
    would be read as another), so their types are matched here, once per call."""

    def __init__(self, kernel: Kernel, exports: list[tuple[tuple[str, ...], Callable[..., Any]]]
                 ) -> None:
        self.kernel = kernel
        self.exports = [(tuple(map(slot_key, slots)), f) for slots, f in exports]
        self.chosen: dict[tuple[int | None, ...], Callable[..., Any]] = {}
        self.__name__ = kernel.__name__

    def __call__(self, *args: Any) -> Any:
        keys = tuple(map(arg_key, args))
        func = self.chosen.get(keys)
        if func is None:
            func = self._choose(keys)
        return func(*args)

    def _choose(self, keys: tuple[int | None, ...]) -> Callable[..., Any]:
        func: Callable[..., Any] | None = None
        for slots, export in self.exports:
            if len(slots) == len(keys) and all(map(_accepts, slots, keys)):
                func = export
                break
        if func is None:
            func = self.kernel.jit
        self.chosen[keys] = func
        return func


class Kernel:
    """A kernel with an interpreted and a lazily compiled form of the same source."""

    def __init__(self, func: Callable[..., Any], *, inline: bool = False,
                 interpreted: Callable[..., Any] | None = None) -> None:
        self.py = func
        self.inline = inline
        self._interpreted = interpreted or func
        self._compiled: Callable[..., Any] | None = None
        self._jit: Callable[..., Any] | None = None
        self.__name__ = func.__name__
        self.__doc__ = func.__doc__

    @property
    def compiled(self) -> Callable[..., Any]:
        """The ahead-of-time exports of this kernel when there are any for the running
        sources, else the just-in-time kernel."""
        if self._compiled is None:
            module = _aot()
            exports = []
            if module is not None and not self.inline:
                prefix = export_prefix(self)
                for name in dir(module):
                    if name.startswith(prefix):
                        slots = tuple(name[len(prefix):].split("_"))
                        exports.append((slots, getattr(module, name)))
            self._compiled = _Dispatch(self, exports) if exports else self.jit
        return self._compiled

    @property
    def python(self) -> types.FunctionType:
        """The source function whose calls to kernels call their numba dispatchers:
        what numba compiles, just in time or ahead of time."""
        glb = dict(self.py.__globals__)
        for name in self.py.__code__.co_names:
            if isinstance(glb.get(name), Kernel):
                glb[name] = glb[name].jit
        func = types.FunctionType(self.py.__code__, glb, self.py.__name__,
                                  self.py.__defaults__, self.py.__closure__)
        func.__qualname__ = self.py.__qualname__
        func.__module__ = self.py.__module__
        return func

    @property
    def jit(self) -> Callable[..., Any]:
        """The kernel compiled by numba just in time (from numba's cache if it has it)."""
        if self._jit is None:
            numba = _numba()
            options: dict[str, Any] = {"inline": "always"} if self.inline else {}
            self._jit = numba.njit(cache=True, nogil=True, **options)(self.python)
        return self._jit

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
