"""TLS and credentials against a real mosquitto: good ones connect, bad ones say why and wait."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support import Mosquitto, running_mosquitto
from uplink_support import (
    Pki,
    as_me,
    make_pki,
    make_uplink,
    running,
    sample,
    stored,
    until,
    uplink_config,
)

from gateway.buffer import Buffer


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    """TLS only, and a client certificate from the test CA is required."""
    with running_mosquitto(tmp_path, pki.mosquitto_tls(require_client_cert=True)) as broker:
        yield broker


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    passwords = tmp_path / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "lamppost", "s3cret"],
        check=True,
        capture_output=True,
        timeout=10,
    )
    extra = f"{as_me()}\nallow_anonymous false\npassword_file {passwords}"
    with running_mosquitto(tmp_path, extra) as broker:
        yield broker


@pytest.fixture
async def buffer(tmp_path: Path) -> AsyncIterator[Buffer]:
    async with Buffer(tmp_path / "buffer.db", sync="normal", commit_interval_s=0.05) as buf:
        await stored(buf, 1, 20)
        yield buf


def _tls(pki: Pki, ca: Path) -> dict[str, object]:
    return {"ca_file": str(ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}


async def test_tls_with_client_certificate_delivers(
    tls_broker: Mosquitto, pki: Pki, buffer: Buffer
) -> None:
    server = f"mqtts://127.0.0.1:{tls_broker.port}"
    uplink = make_uplink(uplink_config([server], tls=_tls(pki, pki.ca)), buffer)
    async with running(uplink):
        await until(lambda: buffer.stats.samples == 0)
    assert uplink.stats.published_total == 20
    assert uplink.stats.server == server


async def test_tls_with_wrong_ca_says_so_once_and_keeps_buffering(
    tls_broker: Mosquitto, pki: Pki, buffer: Buffer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.uplink")
    server = f"mqtts://127.0.0.1:{tls_broker.port}"
    uplink = make_uplink(uplink_config([server], tls=_tls(pki, pki.other_ca)), buffer)
    async with running(uplink):
        await until(lambda: uplink.stats.connect_failures_total >= 3)
        buffer.put(sample(21))
        assert await buffer.flush() == 21
    assert not uplink.stats.connected
    assert buffer.stats.samples == 21
    failures = [r.getMessage() for r in caplog.records if "TLS failure" in r.getMessage()]
    assert len(failures) == 1  # once per change, not once per retry
    assert failures[0].startswith(f"uplink: TLS failure with {server}: ")
    assert "certificate verify failed" in failures[0]
    assert uplink.stats.last_error == failures[0].removeprefix("uplink: ")


async def test_tls_without_the_client_certificate_the_broker_requires_asks_for_it(
    tls_broker: Mosquitto, pki: Pki, buffer: Buffer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.uplink")
    server = f"mqtts://127.0.0.1:{tls_broker.port}"
    uplink = make_uplink(uplink_config([server], tls={"ca_file": str(pki.ca)}), buffer)
    async with running(uplink):
        await until(lambda: uplink.stats.connect_failures_total >= 2)
    assert not uplink.stats.connected
    assert buffer.stats.readings == 20
    expected = (
        f"TLS failure with {server}: the broker closed the TLS session before CONNACK; "
        "does it require a client certificate (uplink.tls.cert_file)?"
    )
    assert uplink.stats.last_error == expected  # what /status shows as uplink.last_error
    failures = [r.getMessage() for r in caplog.records if "TLS failure" in r.getMessage()]
    assert failures == [f"uplink: {expected}"]


async def test_tls_hostname_mismatch_names_the_host(
    tls_broker: Mosquitto, pki: Pki, buffer: Buffer
) -> None:
    # The broker's certificate is for IP 127.0.0.1, not for the name "localhost".
    server = f"mqtts://localhost:{tls_broker.port}"
    uplink = make_uplink(uplink_config([server], tls=_tls(pki, pki.ca)), buffer)
    async with running(uplink):
        await until(lambda: uplink.stats.connect_failures_total >= 1)
    error = uplink.stats.last_error or ""
    assert error.startswith(f"TLS failure with {server}: "), error
    assert "Hostname mismatch, certificate is not valid for 'localhost'" in error


async def test_plain_client_at_tls_listener_is_refused(
    tls_broker: Mosquitto, buffer: Buffer
) -> None:
    uplink = make_uplink(uplink_config([f"mqtt://127.0.0.1:{tls_broker.port}"]), buffer)
    async with running(uplink):
        await until(lambda: uplink.stats.connect_failures_total >= 2)
    assert not uplink.stats.connected
    assert buffer.stats.samples == 20


async def test_password_right_delivers_wrong_is_refused_clearly(
    auth_broker: Mosquitto, buffer: Buffer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.uplink")
    config = uplink_config([auth_broker.url], username="lamppost")
    wrong = make_uplink(config, buffer, password="guess")
    async with running(wrong):
        await until(lambda: wrong.stats.connect_failures_total >= 3)
    assert not wrong.stats.connected
    assert buffer.stats.samples == 20
    refused = [r.getMessage() for r in caplog.records if "auth refused" in r.getMessage()]
    assert refused == [
        f"uplink: auth refused by {auth_broker.url}: Not authorized "
        "(check uplink.username and password_file)"
    ]

    right = make_uplink(config, buffer, password="s3cret")
    async with running(right):
        await until(lambda: buffer.stats.samples == 0)
    assert right.stats.published_total == 20
