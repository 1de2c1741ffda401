"""The report page in headless Chromium (Selenium and the system chromium-driver): no
console errors, no network requests, the figures on the page equal the JSON, the
charts are not blank, and a hostile server name or file name stays text."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from classifier.report import build_report, render_report
from classifier.report.html import FORMATTERS, lookup
from tests import report_capture as rc
from tests.test_report import HOSTILE_NAME, _columns, analysed

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
Image = pytest.importorskip("PIL.Image", reason="pillow not installed")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900", "--disable-extensions", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: Any, path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Load ``path``; the console messages and the URLs requested other than the page."""
    driver.get_log("browser")  # drop what came before
    driver.get_log("performance")
    url = path.as_uri()
    driver.get(url)
    console = driver.get_log("browser")
    requests = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            requests.append(msg["params"]["request"]["url"])
    return console, [u for u in requests if u != url]


def write_page(tmp_path: Path, capture_name: str = "calls.pcap",
               hostile: bool = False) -> tuple[Path, dict[str, Any]]:
    capture = tmp_path / capture_name
    capture.write_bytes(rc.capture())
    result, collector = analysed(capture)
    if hostile:
        collector.add_columns(_columns(1, name=HOSTILE_NAME) | {"bytes_up": [10**9]})
    doc = build_report(result, collector, users=4, plan_users=40)
    page = tmp_path / "report.html"
    page.write_text(render_report(result, doc, "html"), encoding="utf-8")
    return page, json.loads(render_report(result, doc, "json"))


def non_blank(png: bytes) -> tuple[float, float]:
    """Pixel standard deviation and the share of pixels that are not background."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float64)
    return float(pixels.std()), float((pixels < 240).mean())


def test_page_is_offline_error_free_and_its_figures_are_the_json(browser: Any,
                                                                   tmp_path: Path) -> None:
    page, doc = write_page(tmp_path)
    console, requests = open_page(browser, page)
    assert [m for m in console if m["level"] in ("SEVERE", "WARNING")] == []
    assert requests == []
    figures = browser.execute_script(
        "return Array.from(document.querySelectorAll('[data-key]'))"
        ".map(e => [e.dataset.key, e.dataset.value, e.dataset.kind || '', e.innerText]);")
    assert len(figures) > 100
    keys = {f[0] for f in figures}
    for must in ("links.upload.p95_bps", "streams.audio.p95", "streams.audio.peak",
                 "projection.directions.upload.scaled.value_bps",
                 "projection.directions.download.bottom_up.value_bps",
                 "per_stream.video.download_bps", "qos.desktop-sharing.flows.missing",
                 "top_flows.0.bytes_up", "top_talkers.0.bytes", "capture.packets"):
        assert must in keys, must
    for key, value, kind, text in figures:
        expected = lookup(doc, key)
        if expected is None:
            assert text == "n/a", key
            continue
        assert float(value) == expected, key  # the raw value is the JSON's
        assert text == FORMATTERS[kind](expected), key  # and the text is its human form
    # The projection reads as it should for a manager: Mbit/s, side by side.
    summary = browser.find_element("id", "projection-summary").text
    assert "Mbit/s" in summary and "bottom-up" in summary

    # Charts: titled, with axes and legends, and not blank in a screenshot.
    svg_text = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure svg'))"
        ".map(s => s.textContent);")
    assert len(svg_text) == 2
    assert "Upload rate by category" in svg_text[0] and "kbit/s" in svg_text[0]
    assert "audio" in svg_text[0] and "category" in svg_text[0]
    assert "Concurrent audio, video and sharing streams" in svg_text[1]
    assert "peak 2" in svg_text[1] and "streams" in svg_text[1]
    browser.set_window_size(1200, 900)
    for chart in ("chart-rates", "chart-streams"):
        element = browser.find_element("id", chart)
        png = element.screenshot_as_png
        (tmp_path / f"{chart}.png").write_bytes(png)
        std, inked = non_blank(png)
        assert std > 20 and inked > 0.03, (chart, std, inked)
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_page_prints_on_a4_without_cutting_charts(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.print_page_options import PrintOptions

    page, _ = write_page(tmp_path)
    open_page(browser, page)
    styles = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure'))"
        ".map(f => getComputedStyle(f).breakInside);")
    assert styles == ["avoid", "avoid"]
    opts = PrintOptions()
    opts.page_width, opts.page_height = 21.0, 29.7  # A4, cm
    pdf = base64.b64decode(browser.print_page(opts))
    assert pdf.startswith(b"%PDF")
    pages = pdf.count(b"/Type /Page") - pdf.count(b"/Type /Pages")
    assert pages >= 2
    # Each chart fits on a printed page: its height at A4 width is under the page's.
    browser.set_window_size(794, 1123)  # A4 at 96 dpi
    heights = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure svg'))"
        ".map(s => s.getBoundingClientRect().height);")
    assert all(0 < h < 1000 for h in heights), heights
    browser.set_window_size(1200, 900)


def test_hostile_names_render_as_text_and_run_nothing(browser: Any, tmp_path: Path) -> None:
    page, doc = write_page(tmp_path, '<img src=x onerror="window.__pwned=3">.pcap',
                           hostile=True)
    assert doc["top_flows"][0]["server_name"] == HOSTILE_NAME
    console, requests = open_page(browser, page)
    assert requests == []  # an injected <img src=x> would have been fetched
    assert browser.execute_script("return window.__pwned === undefined;") is True
    assert browser.execute_script("return document.querySelectorAll('script, img').length;") == 0
    assert browser.execute_script(
        "return Array.from(document.querySelectorAll('b'))"
        ".some(b => b.textContent === 'teams & co');") is False
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    flows = browser.find_element("id", "top-flows-table").text
    assert HOSTILE_NAME in flows  # the name column shows it, as text
    body = browser.find_element("tag name", "body").text
    assert '<img src=x onerror="window.__pwned=3">.pcap' in body
    assert [m for m in console if m["level"] == "SEVERE"] == []
