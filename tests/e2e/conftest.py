"""End-to-end fixtures: the product as a user runs it, every piece a real process.

    simulated sensors (``python -m gateway.sim``) -> ``street-gateway run -c gateway.yaml``
        -> [FaultProxy] -> mosquitto -> :class:`Upstream` (an aiomqtt subscriber in the test)

Each process is started by a fixture on 127.0.0.1 with a free port and stopped by pid in
teardown. Intervals are short (devices every 0.1-0.5 s, keepalive 2 s, reconnect_max 0.5 s) so
an outage is noticed and healed within a couple of seconds. Every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from proxy import FaultProxy
from support import (
    LOOPBACK,
    Mosquitto,
    free_port,
    small_filesystem,
    stop_process,
    subscription,
    until_set,
    wait_for_port,
)

from gateway.sources.modbus.sim import SimUnit, profile_points
from gateway.uplink.compression import decode_samples_payload

PREFIX = "e2e"
GATEWAY = "lamppost-e2e"
BIN = Path(sys.executable).parent
STREET_GATEWAY = str(BIN / "street-gateway")
START_TIMEOUT_S = 15.0
Device = tuple[str, int, str, str]  # name, Modbus unit, sim profile, poll interval
# Five ten-point cabinets polled every 50 ms: about 100 samples (1,000 point values) a second.
HEAVY: list[Device] = [(f"cab-{u}", u, "street_cabinet", "50ms") for u in range(1, 6)]
STOP_GUARD_S = 15.0  # a hang guard for SIGTERM, not a timing assertion (bench/ measures that)


# ---------------------------------------------------------------------------------------------
# Config building


def modbus_tcp_source(name: str, port: int, devices: list[Device]) -> dict[str, Any]:
    """A modbus-tcp source; ``devices`` are (name, unit, sim profile, interval)."""
    return {
        "name": name,
        "kind": "modbus-tcp",
        "host": LOOPBACK,
        "port": port,
        "timeout": "500ms",
        "retries": 1,
        "backoff_max": "1s",
        "devices": [
            {"name": dev, "unit": unit, "interval": interval, "points": profile_points(profile)}
            for dev, unit, profile, interval in devices
        ],
    }


def noise_source(name: str, tty: Path, interval: str = "2s") -> dict[str, Any]:
    """A stream-mode serial sound-level meter (the sim's ``noise`` format)."""
    return {
        "name": name,
        "kind": "serial",
        "port": str(tty),
        "line_end": "\r\n",
        "interval": interval,
        "parse": {"regex": r"LAeq=(?P<laeq>-?[0-9.]+) LAmax=(?P<lamax>-?[0-9.]+)"},
        "points": [{"name": "laeq", "unit": "dBA"}, {"name": "lamax", "unit": "dBA"}],
    }


def gateway_config(
    *,
    broker_port: int,
    state_dir: Path,
    sources: list[dict[str, Any]],
    alarms: list[dict[str, Any]] | None = None,
    max_size: str = "64MiB",
    sync: str = "normal",
    batch: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A whole gateway.yaml as a dict (the status port is filled in by ``run_daemon``)."""
    return {
        "gateway": {"id": GATEWAY, "labels": {"site": "e2e"}},
        "buffer": {"path": str(state_dir / "buffer.db"), "max_size": max_size, "sync": sync},
        "uplink": {
            "servers": [f"mqtt://{LOOPBACK}:{broker_port}"],
            "topic_prefix": PREFIX,
            "keepalive": "2s",
            "reconnect_max": "500ms",
            "batch": batch or {"max_samples": 200, "max_wait": "50ms"},
        },
        "status": {"listen": f"{LOOPBACK}:0"},
        "sources": sources,
        "alarms": alarms or [],
    }


def modbus_config(
    broker_port: int,
    state_dir: Path,
    sim_port: int,
    devices: list[Device],
    **options: Any,
) -> dict[str, Any]:
    """A gateway with one Modbus TCP bus ("cabinet-bus") of simulated ``devices``."""
    source = modbus_tcp_source("cabinet-bus", sim_port, devices)
    return gateway_config(broker_port=broker_port, state_dir=state_dir, sources=[source], **options)


# ---------------------------------------------------------------------------------------------
# Simulated sensors


ModbusSim = Callable[[list[Device]], int]
SerialSim = Callable[[str, float], Path]


@pytest.fixture
def modbus_sim(tmp_path: Path) -> Iterator[ModbusSim]:
    """``start(devices) -> port``: a Modbus TCP simulator process serving those devices."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(devices: list[Device]) -> int:
        port = free_port()
        args = [sys.executable, "-m", "gateway.sim", "modbus", "--tcp", f"{LOOPBACK}:{port}"]
        for _, unit, profile, _ in devices:
            args += ["--unit", f"{unit}:{profile}"]
        with (tmp_path / f"sim-modbus-{port}.log").open("ab") as log:
            procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
        wait_for_port(port, timeout=START_TIMEOUT_S)
        return port

    yield start
    for proc in procs:
        stop_process(proc)


@pytest.fixture
def serial_sim(tmp_path: Path) -> Iterator[SerialSim]:
    """``start(name, period) -> tty path``: a stream-mode serial sensor process on a pty."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, period: float) -> Path:
        link = tmp_path / f"tty-{name}"
        args = [sys.executable, "-m", "gateway.sim", "serial", "--link", str(link)]
        args += ["--mode", "stream", "--period", str(period), "--seed", "7"]
        with (tmp_path / f"sim-serial-{name}.log").open("ab") as log:
            procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not link.exists():
            if time.monotonic() > deadline or procs[-1].poll() is not None:
                raise TimeoutError(f"serial simulator did not create {link}")
            time.sleep(0.02)
        return link

    yield start
    for proc in procs:
        stop_process(proc)


def simulated_bus(
    modbus_sim: ModbusSim,
    broker_port: int,
    state_dir: Path,
    devices: list[Device],
    **options: Any,
) -> dict[str, Any]:
    """Start a simulator serving ``devices`` and return a gateway config polling them."""
    return modbus_config(broker_port, state_dir, modbus_sim(devices), devices, **options)


def value_range(profile: str, point: str, elapsed_s: float) -> tuple[float, float]:
    """Lowest and highest value the simulated ``point`` took in its first ``elapsed_s``."""
    unit = SimUnit(1, profile)
    wave = next(w for p, w in unit.points if p.name == point)
    samples = [float(wave(i * 0.01)) for i in range(int(elapsed_s * 100) + 1)]
    return min(samples), max(samples)


# ---------------------------------------------------------------------------------------------
# The daemon


@dataclass
class Daemon:
    """One ``street-gateway run`` process and the file it reads its config from."""

    proc: subprocess.Popen[bytes]
    config_path: Path
    status_port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: signal.Signals) -> None:
        os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """kill -9, and reap."""
        self.signal(signal.SIGKILL)
        self.proc.wait(STOP_GUARD_S)

    async def terminate(self) -> int:
        """SIGTERM and wait (bounded by a hang guard); the exit code."""
        self.signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, STOP_GUARD_S)

    def write_config(self, config: dict[str, Any] | str) -> None:
        """Replace the config file (a dict keeps this daemon's status port); SIGHUP reloads it."""
        if isinstance(config, dict):
            config = yaml.safe_dump(with_status_port(config, self.status_port), sort_keys=False)
        self.config_path.write_text(config)

    async def get(self, path: str) -> tuple[int, str, str]:
        """GET from the status endpoint: (status code, content type, body)."""
        url = f"http://{LOOPBACK}:{self.status_port}{path}"

        def fetch() -> tuple[int, str, str]:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return (
                        response.status,
                        response.headers["Content-Type"],
                        response.read().decode(),
                    )
            except urllib.error.HTTPError as exc:
                return exc.code, exc.headers["Content-Type"], exc.read().decode()

        return await asyncio.to_thread(fetch)

    async def status(self) -> dict[str, Any]:
        code, _, body = await self.get("/status")
        assert code == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    async def wait_status(
        self, predicate: Callable[[dict[str, Any]], object], within_s: float, what: str
    ) -> dict[str, Any]:
        """Poll ``/status`` every 0.1 s until ``predicate(status)`` holds; that status."""
        status: dict[str, Any] = {}
        try:
            async with asyncio.timeout(within_s):
                while not predicate(status := await self.status()):
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(
                f"/status never showed {what} within {within_s}s: {status}"
            ) from None
        return status


RunDaemon = Callable[..., Daemon]


def with_status_port(config: dict[str, Any], port: int) -> dict[str, Any]:
    return {**config, "status": {**config.get("status", {}), "listen": f"{LOOPBACK}:{port}"}}


@pytest.fixture
def run_daemon(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[RunDaemon]:
    """``run_daemon(config, env=None, command=None) -> Daemon``: start ``street-gateway run`` as
    a user does (``command``: another program than the venv's ``street-gateway``).

    The config dict is written to ``tmp_path/gateway.yaml`` (status on a free port); the same
    file is reused by every start in the test, so a restart runs on the same buffer. The clock
    check is pinned to ``synced`` unless ``env`` says otherwise; NOTIFY_SOCKET and the watchdog
    variables of the test's own environment never leak into the daemon. Daemons are stopped
    before the test's mosquitto, so their logs end with a clean shutdown, not a lost link.
    """
    daemons: list[Daemon] = []

    def start(
        config: dict[str, Any],
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> Daemon:
        status_port = free_port()
        config_path = tmp_path / "gateway.yaml"
        config_path.write_text(
            yaml.safe_dump(with_status_port(config, status_port), sort_keys=False)
        )
        environ = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "STREET_GATEWAY_CONFIG")
        }
        environ["STREET_GATEWAY_CLOCK"] = "synced"
        environ.update(env or {})
        log_path = tmp_path / f"daemon-{len(daemons)}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [*(command or [STREET_GATEWAY]), "run", "-c", str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ,
            )
        daemon = Daemon(proc, config_path, status_port, log_path)
        daemons.append(daemon)
        try:
            wait_for_port(status_port, timeout=START_TIMEOUT_S)
        except TimeoutError:
            raise AssertionError(f"the daemon did not start:\n{daemon.log()}") from None
        return daemon

    yield start
    for daemon in daemons:
        stop_process(daemon.proc)


# ---------------------------------------------------------------------------------------------
# The upstream side


@dataclass
class Message:
    kind: str  # samples | alarms | gaps | status | meta
    data: dict[str, Any]
    retain: bool
    at: float  # time.monotonic() of arrival
    payload: bytes  # as it crossed the wire (to check how values are written)


@dataclass
class Upstream:
    """Everything the gateway publishes under ``PREFIX/GATEWAY/#``, as a fleet backend sees it."""

    port: int
    messages: list[Message] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, kind: str) -> list[Message]:
        return [m for m in self.messages if m.kind == kind]

    def samples(self) -> list[dict[str, Any]]:
        """Every sample received (one poll of one device), in arrival order."""
        return [s for m in self.of("samples") for s in m.data["samples"]]

    def meta(self) -> dict[str, Any] | None:
        """The last ``meta`` message: units and types of every device's points."""
        metas = self.of("meta")
        return metas[-1].data if metas else None

    def seq_counts(self) -> Counter[int]:
        """How many times each seq arrived in samples or alarms."""
        counts: Counter[int] = Counter(s["seq"] for s in self.samples())
        counts.update(m.data["seq"] for m in self.of("alarms"))
        return counts

    def gap_seqs(self) -> set[int]:
        return {s for m in self.of("gaps") for s in range(m.data["from_seq"], m.data["to_seq"] + 1)}

    def max_seq(self) -> int:
        return max([0, *self.seq_counts(), *self.gap_seqs()])

    def holes(self) -> list[int]:
        """Seqs in 1..max neither received (samples, alarms) nor declared lost (gaps)."""
        covered = set(self.seq_counts()) | self.gap_seqs()
        return [s for s in range(1, self.max_seq() + 1) if s not in covered]

    def duplicates(self) -> set[int]:
        return {seq for seq, n in self.seq_counts().items() if n > 1}

    def reused_seqs(self) -> set[int]:
        """Seqs that arrived with different contents: a seq given to two samples."""
        seen: dict[int, dict[str, Any]] = {}
        reused = set()
        for item in [*self.samples(), *(m.data for m in self.of("alarms"))]:
            if seen.setdefault(item["seq"], item) != item:
                reused.add(item["seq"])
        return reused

    def last_status(self) -> dict[str, Any] | None:
        statuses = self.of("status")
        return statuses[-1].data if statuses else None

    def state(self) -> str | None:
        """The gateway's state in its last status message (online/offline), None before any."""
        last = self.last_status()
        return None if last is None else str(last["state"])

    async def wait_until(
        self, predicate: Callable[[], object], within_s: float = 10.0, what: str = ""
    ) -> None:
        """Wait until ``predicate()`` holds, re-checked on every message and every 0.1 s."""
        try:
            await until_set(self._arrived, predicate, within_s, 0.1)
        except TimeoutError:
            raise AssertionError(
                f"timed out after {within_s}s waiting for {what or predicate!r}; "
                f"{len(self.messages)} messages, max seq {self.max_seq()}"
            ) from None

    async def wait_for_seq_above(self, seq: int, within_s: float = 10.0) -> None:
        await self.wait_until(lambda: self.max_seq() > seq, within_s, f"a seq above {seq}")

    def _take(self, message: aiomqtt.Message) -> None:
        body = message.payload
        assert isinstance(body, bytes)
        kind = str(message.topic).rsplit("/", 1)[-1]
        if kind == "samples.zst":  # uplink.compression: zstd; ``payload`` keeps the frame
            kind, data = "samples", decode_samples_payload(body)
        else:
            data = json.loads(body)
        self.messages.append(Message(kind, data, message.retain, time.monotonic(), body))
        self._arrived.set()


@contextlib.asynccontextmanager
async def subscribed(port: int) -> AsyncIterator[Upstream]:
    """An :class:`Upstream` subscribed (QoS 1) to the gateway's topics for the block's duration."""
    upstream = Upstream(port)
    identifier = f"e2e-upstream-{time.monotonic_ns()}"
    topic = f"{PREFIX}/{GATEWAY}/#"
    async with subscription(
        port, topic, upstream._take, identifier=identifier, name="e2e-upstream"
    ):
        yield upstream


@pytest.fixture
async def upstream(mosquitto: Mosquitto) -> AsyncIterator[Upstream]:
    """A subscriber on the test's mosquitto, connected before any daemon starts."""
    async with subscribed(mosquitto.port) as sub:
        yield sub


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs for the buffer (root only: skipped otherwise)."""
    with small_filesystem(tmp_path / "small-fs", "8m") as where:
        yield where


@pytest.fixture
async def link(mosquitto: Mosquitto) -> AsyncIterator[FaultProxy]:
    """A cuttable TCP link to mosquitto: point the daemon at ``link.port``."""
    async with FaultProxy(mosquitto.port) as proxy:
        yield proxy
