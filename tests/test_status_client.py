"""`street-gateway status` as a subprocess against a real status server (in a thread)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from status_support import LINK_COST, FakeProvider, healthy_provider, serve_in_thread
from support import free_port

from gateway.model import StatusEvent, UplinkStats

TOKEN = "tok-3f9a-5c1d-77e2"  # a config refuses a token under 16 bytes


def status_command(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREET_GATEWAY_")}
    environ["STREET_GATEWAY_CONFIG"] = "/nonexistent/gateway.yaml"
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway", "status", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=environ,
        check=False,
    )


@pytest.fixture
def provider() -> FakeProvider:
    return healthy_provider()


@pytest.fixture
def server(provider: FakeProvider) -> Iterator[str]:
    with serve_in_thread(provider) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def guarded(provider: FakeProvider) -> Iterator[str]:
    with serve_in_thread(provider, token=TOKEN) as port:
        yield f"http://127.0.0.1:{port}"


def test_healthy_exits_0_and_prints_every_part(server: str) -> None:
    result = status_command("--url", server)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "lamppost-0421" in out
    assert "health   ok" in out
    assert "connected to mqtt://127.0.0.1:1883" in out
    assert "1234 samples and alarms published" in out
    assert "backlog 12" in out
    assert "12 held" in out
    lines = out.splitlines()
    assert f"link     {LINK_COST}" in lines  # what the LTE plan carries, under the uplink line
    assert (
        lines.index(f"link     {LINK_COST}")
        == next(i for i, line in enumerate(lines) if line.startswith("uplink ")) + 1
    )
    for device, state in [("aq-1", "ok"), ('<script>alert("x")</script>', "failing")]:
        row = next(line for line in lines if line.strip().startswith(device))
        assert state in row
    noise = next(line for line in lines if line.strip().startswith("noise-1"))
    assert "parse 4" in noise
    assert "laeq=61.2" in noise


def test_link_line_before_anything_was_sent(server: str, provider: FakeProvider) -> None:
    provider.uplink = UplinkStats()
    result = status_command("--url", server)
    assert result.returncode == 0, result.stderr
    assert "link     0 B sent · 0 B/h · - per sample" in result.stdout.splitlines()
    assert "DISCONNECTED" in result.stdout


def test_degraded_exits_1_and_says_why(server: str, provider: FakeProvider) -> None:
    provider.buffer.writable = False
    provider.buffer.last_error = "disk full"
    result = status_command("--url", server)
    assert result.returncode == 1, result.stderr
    assert "DEGRADED" in result.stdout
    assert "buffer cannot be written: disk full" in result.stdout


def test_nothing_listening_exits_3_and_says_why() -> None:
    result = status_command("--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 3
    assert "unreachable" in result.stderr
    assert "cannot connect" in result.stderr
    assert "refused" in result.stderr.lower()


def test_token_from_file_or_environment(guarded: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    token_file.chmod(0o600)
    assert status_command("--url", guarded, "--token-file", str(token_file)).returncode == 0
    assert status_command("--url", guarded, env={"STREET_GATEWAY_TOKEN": TOKEN}).returncode == 0
    missing = status_command("--url", guarded)
    assert missing.returncode == 3
    assert "401" in missing.stderr
    wrong = status_command("--url", guarded, env={"STREET_GATEWAY_TOKEN": "nope"})
    assert wrong.returncode == 3
    assert "wrong token" in wrong.stderr


def test_address_and_token_come_from_the_config(guarded: str, tmp_path: Path) -> None:
    token_file = tmp_path / "status-token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "gateway": {"id": "lamppost-0421"},
                "uplink": {"servers": ["mqtt://127.0.0.1:1883"]},
                "status": {"listen": guarded.removeprefix("http://"), "token_file": "status-token"},
                "sources": [
                    {
                        "name": "noise-1",
                        "kind": "serial",
                        "port": "/dev/ttyAMA0",
                        "parse": {"format": "kv"},
                        "points": [{"name": "laeq"}],
                    }
                ],
            }
        )
    )
    result = status_command("-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "lamppost-0421" in result.stdout
    # and through $STREET_GATEWAY_CONFIG
    assert status_command(env={"STREET_GATEWAY_CONFIG": str(config)}).returncode == 0


def test_a_broken_config_without_url_exits_3(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("gateway: {id: 'Not Valid'}\n")
    result = status_command("-c", str(config))
    assert result.returncode == 3
    assert "cannot tell where the daemon listens" in result.stderr
    assert "gateway.id" in result.stderr


def test_a_device_not_yet_polled_shows_unknown_and_never_ok(
    server: str, provider: FakeProvider
) -> None:
    first = provider.devices()[0]
    first.state, first.last_ok_ts, first.reads_ok = "unknown", None, 0
    first.last_values.clear()
    result = status_command("--url", server)
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("aq-1"))
    assert row.split()[:3] == ["aq-1", "rs485-1", "unknown"]
    assert "last ok never" in row


def test_the_last_10_events_are_printed_newest_first(server: str, provider: FakeProvider) -> None:
    base = provider.stored_events[-1].ts_ms
    provider.stored_events = [
        StatusEvent(base + n * 1000, "link_down", f"event number {n}", {"server": "s"})
        for n in range(14, 0, -1)
    ]
    result = status_command("--url", server)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    head = lines.index("events   14 in the last 24h, the last 10:")
    shown = lines[head + 1 :]
    assert [line.split("event number ")[1] for line in shown] == [str(n) for n in range(14, 4, -1)]
    assert all("link_down" in line and "ago)" in line for line in shown)
    assert "up 1h " in lines[0]  # uptime in the one duration style
