"""The status endpoint of a running daemon: a token rotated by SIGHUP, and the RTU-over-TCP
link's CRC and garbage counters in /status and /metrics."""

from __future__ import annotations

import asyncio
import signal
import struct
import urllib.error
import urllib.request
from pathlib import Path

from fake_device import RTU_REQUEST, fake_device

from e2e.conftest import LOOPBACK, ModbusSim, RunDaemon, Upstream, gateway_config, modbus_config
from gateway.codec import rtu


def get(port: int, path: str, token: str) -> int:
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_a_token_file_changed_then_sighup_takes_the_new_token(
    modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    token_file = tmp_path / "status-token"
    token_file.write_text("old-token-0123456789\n")
    token_file.chmod(0o600)
    aq = ("aq-1", 1, "air_quality", "1s")
    config = modbus_config(upstream.port, tmp_path, modbus_sim([aq]), [aq])
    config["status"] = {"token_file": str(token_file)}
    daemon = run_daemon(config)
    port = daemon.status_port
    assert await asyncio.to_thread(get, port, "/status", "old-token-0123456789") == 200

    token_file.write_text("new-token-9876543210\n")
    daemon.signal(signal.SIGHUP)
    async with asyncio.timeout(10):
        while await asyncio.to_thread(get, port, "/status", "new-token-9876543210") != 200:
            await asyncio.sleep(0.1)
    assert await asyncio.to_thread(get, port, "/status", "old-token-0123456789") == 401
    assert await asyncio.to_thread(get, port, "/metrics", "old-token-0123456789") == 401
    assert "status endpoint: the token changed" in daemon.log()


async def test_rtu_over_tcp_crc_errors_and_garbage_show_per_source(
    run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    """A converter whose answers alternate: a bad CRC, then bytes that are no answer."""
    answers = 0

    async def reply(request: bytes, writer: asyncio.StreamWriter) -> None:
        nonlocal answers
        answers += 1
        unit, _, _, count = struct.unpack(">BBHH", request[:6])
        frame = bytearray(rtu.with_crc(bytes([unit, 3, 2 * count]) + b"\x00\x07" * count))
        if answers % 2:
            frame[3] ^= 0x01  # the CRC no longer matches
            writer.write(bytes(frame))
        else:
            writer.write(b"\x00\xff\x13\x37\x00")

    async with fake_device(reply, RTU_REQUEST) as device_port:
        source = {
            "name": "converter", "kind": "modbus-tcp", "framing": "rtu", "host": LOOPBACK,
            "port": device_port, "timeout": "300ms", "retries": 0, "backoff_max": "200ms",
            "devices": [{"name": "meter", "unit": 1, "interval": "200ms", "points": [
                {"name": "v", "table": "holding", "address": 0, "type": "uint16"}]}],
        }  # fmt: skip
        config = gateway_config(broker_port=upstream.port, state_dir=tmp_path, sources=[source])
        daemon = run_daemon(config)
        status = await daemon.wait_status(
            lambda s: all(
                v >= 2 for v in (s.get("sources") or [{}])[0].get("link", {"x": 0}).values()
            ),
            15,
            "two CRC errors and two garbage answers",
        )
        link = status["sources"][0]["link"]
        assert set(link) == {"crc_errors", "garbage"}
        assert status["sources"][0]["devices"][0]["reads_failed"] >= link["crc_errors"]
        _, _, metrics = await daemon.get("/metrics")
        assert 'street_gateway_source_link_errors_total{kind="crc_errors",source="converter"}' in (
            metrics
        )
        assert 'kind="garbage",source="converter"}' in metrics
        await daemon.terminate()
