"""A server name with markup, learned from a capture's ClientHello, in the report: it
reaches the page through the naming stage and the flow records, and stays text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("scapy")
from tests.test_names import Capture, hello
from tests.test_report_browser import CHROMIUM, DRIVER, browser, open_page  # noqa: F401

HOSTILE = b'<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">.example'
SHOWN = HOSTILE.decode().replace(" ", "\\x20")  # names are kept as printable ASCII


def report(tmp_path: Path, fmt: str) -> Path:
    cap = Capture()
    cap.tcp_flow("93.184.216.34", 443, hello(HOSTILE), "not-office365", replies=20)
    path = cap.write(tmp_path / "hostile-sni.pcap")
    out = tmp_path / f"report.{fmt}"
    proc = subprocess.run(
        [sys.executable, "-m", "classifier", "report", "-q", "--rules", "office365-services",
         "--format", fmt, "-o", str(out), str(path)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def test_capture_name_reaches_the_report_json(tmp_path: Path) -> None:
    doc = json.loads(report(tmp_path, "json").read_text())
    assert [f["server_name"] for f in doc["top_flows"]] == [SHOWN]


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="needs chromium and chromedriver")
def test_capture_name_renders_as_text(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    page = report(tmp_path, "html")
    console, requests = open_page(browser, page)
    assert requests == []
    assert browser.execute_script("return window.__pwned === undefined;") is True
    assert browser.execute_script("return document.querySelectorAll('script, img').length;") == 0
    assert SHOWN in browser.find_element("id", "top-flows-table").text
    assert [m for m in console if m["level"] == "SEVERE"] == []
