"""The progress bar: on stderr for a terminal, never otherwise, never with --quiet."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path


def _stderr_on_a_terminal(*args: str) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "classifier", *args],
                            stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closes when the process ends
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def test_progress_shows_on_a_terminal(pcaps_dir: Path) -> None:
    code, err = _stderr_on_a_terminal("analyze", str(pcaps_dir / "office365-mix.pcap"))
    assert code == 0
    assert "analysing" in err


def test_quiet_hides_the_progress_bar(pcaps_dir: Path) -> None:
    code, err = _stderr_on_a_terminal("analyze", "--quiet",
                                      str(pcaps_dir / "office365-mix.pcap"))
    assert code == 0
    assert "analysing" not in err
