"""The page `/` in a real headless browser: it loads, refreshes itself from /status, shows every
device, and works with a token given in its address."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from status_support import (
    CHROMIUM,
    dump_dom,
    healthy_provider,
    measure_in_chromium,
    sample_provider,
    serve_in_thread,
)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed (apt-get install -y chromium); "
    "the CI bootstrap installs it",
)


def refreshed_rows(dom: str) -> tuple[int, list[str]]:
    match = re.search(r'data-refreshes="(\d+)"', dom)
    assert match, dom[:2000]
    return int(match.group(1)), re.findall(r'<tr class="device" data-device="([^"]*)"', dom)


def test_every_device_row_is_rendered_after_a_refresh(tmp_path: Path) -> None:
    with serve_in_thread(healthy_provider()) as port:
        dom = dump_dom(f"http://127.0.0.1:{port}/", tmp_path / "profile")
    refreshes, rows = refreshed_rows(dom)
    assert refreshes >= 1  # the script replaced the server-rendered content from /status
    assert rows == ["aq-1", "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;", "noise-1"]
    assert dom.count("<script") == 1  # the hostile device name stayed text
    assert "Not updated" not in dom.split("<script")[0]
    assert "lamppost-0421" in dom
    assert "12.3" in dom


def test_the_page_refreshes_with_a_token_from_its_address(tmp_path: Path) -> None:
    with serve_in_thread(healthy_provider(), token="page-token") as port:
        dom = dump_dom(f"http://127.0.0.1:{port}/?token=page-token", tmp_path / "profile")
    refreshes, rows = refreshed_rows(dom)
    assert refreshes >= 1
    assert len(rows) == 3


def test_after_a_refresh_the_dom_holds_every_event_and_a_sparkline_per_number(
    tmp_path: Path,
) -> None:
    provider = healthy_provider()
    with serve_in_thread(provider) as port:
        dom = dump_dom(f"http://127.0.0.1:{port}/", tmp_path / "profile")
    refreshes, _ = refreshed_rows(dom)
    assert refreshes >= 1  # what is checked is the swapped-in body, not the first load
    for event in provider.stored_events:
        assert html.escape(event.message, quote=False) in dom, event.message
    assert dom.count("<script") == 1  # the hostile device name in an event stayed text
    rows = dict(re.findall(r'<tr class="device" data-device="([^"]*)">(.*?)</tr>', dom, re.S))
    for device in provider.devices():
        numeric = [v for v in device.last_values.values() if isinstance(v, int | float)]
        row = rows[html.escape(device.name)]
        assert row.count('<svg class="spark"') == len(numeric), device.name
    assert 'data-lane="link"' in dom


# Every table's right edge against its card's, and the page's own width (no side scrolling).
_OVERFLOW = """[...document.querySelectorAll('.wide')].map(function(w){
  var last=w.querySelector('tr th:last-child').getBoundingClientRect();
  return [w.querySelector('th').textContent, w.scrollWidth-w.clientWidth,
          Math.round(last.right-w.getBoundingClientRect().right)];
}).concat([['page', document.documentElement.scrollWidth-innerWidth, 0]])"""


def test_at_1280_px_every_column_is_on_screen(tmp_path: Path) -> None:
    """A laptop's 1280 px: the devices table (long errors, four sparklines a device) and the
    events fit their cards; none is cut or needs scrolling sideways."""
    with serve_in_thread(sample_provider()) as port:
        overflows = measure_in_chromium(
            f"http://127.0.0.1:{port}/", tmp_path / "profile", 1280, _OVERFLOW
        )
    assert [name for name, *_ in overflows] == ["Device", "When", "page"]
    assert all(scroll <= 0 and edge <= 0 for _, scroll, edge in overflows), overflows
