"""Helpers for the uplink tests: a collecting subscriber, a running uplink, a test PKI."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from support import in_background, subscription

from gateway.config import UplinkConfig
from gateway.model import Sample
from gateway.uplink.json_format import JsonFormat
from gateway.uplink.meter import publish_size
from gateway.uplink.mqtt import Uplink
from gateway.uplink.wire import Catalog, DeviceInfo, PointInfo

PREFIX = "t"
GATEWAY = "gw-1"
VERSION = "0.1.0-test"
T0 = 1_764_169_200_000

# One air-quality sensor on an RS-485 bus, as catalog_of() would describe it.
CATALOG = Catalog(
    gateway_id=GATEWAY,
    config_digest="abc",
    devices=(
        DeviceInfo(
            "aq-1",
            "rs485-1",
            "modbus-rtu",
            10,
            {"pm25": PointInfo("uint16", "ug/m3"), "temp": PointInfo("float32", "degC")},
        ),
    ),
    alarms=("aq-1/pm25>50",),
)


def uplink_config(servers: list[str], **overrides: Any) -> UplinkConfig:
    """Short intervals so outages are noticed and healed within a second or two."""
    raw: dict[str, Any] = {
        "servers": servers,
        "topic_prefix": PREFIX,
        "keepalive": "1s",
        "reconnect_max": "500ms",
        "batch": {"max_samples": 50, "max_wait": "50ms"},
        "max_inflight": 8,
    }
    raw.update(overrides)
    return UplinkConfig.model_validate(raw)


def make_uplink(
    config: UplinkConfig, buffer: Any, password: str | None = None, catalog: Catalog = CATALOG
) -> Uplink:
    wire_format = JsonFormat(
        catalog, topic_prefix=config.topic_prefix, qos=config.qos, version=VERSION, started_ms=1
    )
    return Uplink(
        config,
        gateway_id=GATEWAY,
        client_id=GATEWAY,
        buffer=buffer,
        password=password,
        wire_format=wire_format,
        reconnect_min_s=0.05,
    )


def sample(i: int) -> Sample:
    """The ``i``-th poll of aq-1: its pm25 is ``i``."""
    return Sample(device="aq-1", ts_ms=T0 + i, values={"pm25": i, "temp": 21.5})


def put_samples(buffer: Any, first: int, last: int) -> None:
    """``sample(first)`` .. ``sample(last)`` into the buffer (not waiting for their commit)."""
    for i in range(first, last + 1):
        buffer.put(sample(i))


async def stored(buffer: Any, first: int, last: int) -> int:
    """``put_samples`` then commit them: a backlog. Returns the buffer's last seq."""
    put_samples(buffer, first, last)
    last_seq: int = await buffer.flush()
    return last_seq


@dataclass
class Received:
    topic: str
    data: dict[str, Any]
    retain: bool
    at: float  # monotonic
    payload: bytes
    qos: int

    @property
    def size(self) -> int:
        """The PUBLISH packet the gateway sent for it (subscribed at QoS 1: the same QoS)."""
        return publish_size(self.topic, self.payload, self.qos)


@dataclass
class Subscriber:
    """Everything published under ``PREFIX/GATEWAY/#``, in arrival order."""

    messages: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, kind: str) -> list[Received]:
        return [m for m in self.messages if m.topic == f"{PREFIX}/{GATEWAY}/{kind}"]

    def kinds(self) -> list[str]:
        """The last topic level of every message, in arrival order: status, meta, samples..."""
        return [m.topic.rsplit("/", 1)[-1] for m in self.messages]

    def samples(self) -> list[dict[str, Any]]:
        """Every sample received, in arrival order."""
        return [s for m in self.of("samples") for s in m.data["samples"]]

    def seq_counts(self, since: int = 0) -> Counter[int]:
        """How often each seq arrived in samples or alarms (messages from index ``since``)."""
        counts: Counter[int] = Counter()
        for m in self.messages[since:]:
            if m.topic.endswith("/samples"):
                counts.update(s["seq"] for s in m.data["samples"])
            elif m.topic.endswith("/alarms"):
                counts[m.data["seq"]] += 1
        return counts

    def covered(self) -> set[int]:
        """Seqs received, or declared lost in a gap message."""
        seqs = set(self.seq_counts())
        for m in self.of("gaps"):
            seqs.update(range(m.data["from_seq"], m.data["to_seq"] + 1))
        return seqs

    def take(self, message: aiomqtt.Message) -> None:
        body = message.payload
        assert isinstance(body, bytes)
        self.messages.append(
            Received(
                str(message.topic),
                json.loads(body),
                message.retain,
                time.monotonic(),
                body,
                int(message.qos),
            )
        )
        self.arrived.set()

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 10.0) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def subscribed(port: int, topic: str = f"{PREFIX}/{GATEWAY}/#") -> AsyncIterator[Subscriber]:
    sub = Subscriber()
    identifier = f"sub-{time.monotonic_ns()}"
    async with subscription(port, topic, sub.take, identifier=identifier, name="test-subscriber"):
        yield sub


def running(uplink: Uplink) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
    """``uplink.run()`` in a task (yielded), cancelled and awaited on exit."""
    return in_background(uplink.run(), "test-uplink")


async def until(predicate: Callable[[], bool], within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while not predicate():
            await asyncio.sleep(0.02)


def as_me() -> str:
    """Keep mosquitto as this user: started as root it would drop to ``mosquitto`` and could
    not read the test's files (harmless when not root)."""
    return f"user {getpass.getuser()}"


# ---------------------------------------------------------------------------------------------
# A throwaway PKI made with the openssl command (the cryptography package is not installed).


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path  # a CA that signed nothing the broker shows
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def mosquitto_tls(self, *, require_client_cert: bool) -> str:
        lines = [
            as_me(),
            f"cafile {self.ca}",
            f"certfile {self.server_cert}",
            f"keyfile {self.server_key}",
        ]
        if require_client_cert:
            lines.append("require_certificate true")
        return "\n".join(lines)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def _new_ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return cert, key


def _signed(folder: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    cert, key, csr = folder / f"{name}.pem", folder / f"{name}.key", folder / f"{name}.csr"
    extfile = folder / f"{name}.ext"
    extfile.write_text(ext + "\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={name}")  # fmt: skip
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", extfile)  # fmt: skip
    key.chmod(0o600)
    return cert, key


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _new_ca(folder, "test-ca")
    other, _ = _new_ca(folder, "other-ca")
    server = _signed(
        folder, "server", ca, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"
    )
    client = _signed(folder, "client", ca, "extendedKeyUsage=clientAuth")
    return Pki(ca[0], other, server[0], server[1], client[0], client[1])
