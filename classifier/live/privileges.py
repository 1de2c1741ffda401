"""Dropping root once the capture socket is open, before any packet is parsed."""

from __future__ import annotations

import os
import pwd
import sys
import tempfile

from .base import CaptureSetupError

__all__ = ["drop_privileges"]


def drop_privileges(user: str) -> str | None:
    """Become ``user`` (its group, no supplementary groups) if running as root; returns
    the user now in effect, or None when not root (nothing to drop)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise CaptureSetupError(f"--user {user!r}: no such user") from None
    if entry.pw_uid == 0:
        return user
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir
    if "numba" in sys.modules:
        # The kernels were loaded as root; anything compiled later is cached where
        # this user may write (created only if something is).
        import numba

        cache = os.path.join(tempfile.gettempdir(), f"o365-traffic-numba-{entry.pw_uid}")
        numba.config.CACHE_DIR = cache  # type: ignore[attr-defined]
    return user
