"""The page `/` in a real headless browser: it loads, refreshes itself from /status, shows every
device, and works with a token given in its address."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from status_support import CHROMIUM_FLAGS, healthy_provider, serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed (apt-get install -y chromium); "
    "the CI bootstrap installs it",
)


def dump_dom(url: str, profile: Path) -> str:
    """The DOM after 12 s of virtual time: the page refreshes every 5 s, so at least once."""
    result = subprocess.run(
        [
            str(CHROMIUM),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=12000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


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
