"""`street-gateway demo`: the whole pipeline on one machine, no hardware and no config.

Simulated street sensors (Modbus TCP units and a serial noise meter on a pseudo-terminal), a local
MQTT broker (mosquitto when installed, else the embedded amqtt broker), a cuttable link between
the daemon and the broker, the daemon itself with its status page, and an upstream subscriber
that counts what arrives. A live view shows each device's latest values, messages/s, the link
cost, the backlog, the uplink state and "delivered N of M". ``--outage 20s`` cuts the link for
20 s every 40 s.

Since v0.3 the river gauge floods past its alarm every four minutes and the alarm's action
closes the flood barrier at the edge (during an outage too), opening it again when the river
falls; a demo operator, with a key the demo makes at start, sends one signed command a minute
(the speed sign before the barrier). The view shows the results as they arrive.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from gateway.commands.message import sign
from gateway.config import load_config, parse_duration
from gateway.daemon import Daemon
from gateway.keys import SigningKey
from gateway.model import format_link_cost
from gateway.sim.broker import (
    find_mosquitto,
    free_port,
    port_is_free,
    start_mosquitto,
    stop_process,
)
from gateway.sim.link import CuttableLink
from gateway.sim.upstream import Upstream, subscribe
from gateway.sources.modbus.sim import SimUnit, profile_points, serve_tcp
from gateway.sources.registry import installed
from gateway.sources.serial.sim import SimulatedSerialSensor

log = logging.getLogger(__name__)

GATEWAY_ID = "demo-lamppost"
TOPIC_PREFIX = "street-gateway"
MODBUS_UNITS = [
    (1, "air-quality", "air_quality", "2s"),
    (2, "river-level", "river_gauge", "1s"),
    (3, "cabinet-meter", "energy_meter", "5s"),
    (4, "traffic-count", "traffic_counter", "2s"),
    (5, "barrier-1", "barrier", "2s"),
]
OPERATOR = "demo-operator"
COMMAND_EVERY_S = 60.0
NOISE_METER = "noise-1"
REFRESH_S = 0.5


def demo_config(
    *,
    modbus_port: int,
    noise_tty: str,
    broker_port: int,
    status_port: int,
    state_dir: Path,
    operator_key: Path | None = None,
) -> dict[str, Any]:
    """The demo's gateway.yaml (configs/demo.yaml is the same with fixed ports, without the
    ``commands`` section: its key is made when the demo starts)."""
    commands = (
        {"commands": {"trusted_keys": [{"name": OPERATOR, "public_key_file": str(operator_key)}]}}
        if operator_key is not None
        else {}
    )
    return {
        "gateway": {"id": GATEWAY_ID, "labels": {"site": "demo"}},
        "buffer": {"path": str(state_dir / "buffer.db"), "max_size": "64MiB", "sync": "normal"},
        "uplink": {
            "servers": [f"mqtt://127.0.0.1:{broker_port}"],
            "topic_prefix": TOPIC_PREFIX,
            "batch": {"max_samples": 100, "max_wait": "100ms"},
            "keepalive": "5s",
            "reconnect_max": "2s",
        },
        "status": {"listen": f"127.0.0.1:{status_port}"},
        "security": {"seal_interval": "2s"},  # the first seals verified within seconds
        "sources": [
            {
                "name": "cabinet-bus",
                "kind": "modbus-tcp",
                "host": "127.0.0.1",
                "port": modbus_port,
                "timeout": "500ms",
                "retries": 1,
                "devices": [
                    {"name": name, "unit": unit, "interval": interval,
                     "points": profile_points(profile)}
                    for unit, name, profile, interval in MODBUS_UNITS
                ],
            },
            {
                "name": NOISE_METER,
                "kind": "serial",
                "port": noise_tty,
                "line_end": "\r\n",
                "interval": "2s",
                "parse": {"regex": r"LAeq=(?P<laeq>-?[0-9.]+) LAmax=(?P<lamax>-?[0-9.]+)"},
                "points": [{"name": "laeq", "unit": "dBA"}, {"name": "lamax", "unit": "dBA"}],
            },
        ],
        "alarms": [
            {"point": "noise-1/laeq", "above": 68, "clear_below": 64, "priority": "normal"},
            {"point": "river-level/level", "above": 1.45, "clear_below": 1.4,
             "priority": "critical", "actions": [
                 {"on": "raised", "write": {"point": "barrier-1/closed", "value": True}},
                 {"on": "cleared", "write": {"point": "barrier-1/closed", "value": False}},
             ]},
        ],
        **commands,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The local broker


@contextlib.asynccontextmanager
async def local_broker(workdir: Path, *, embedded: bool) -> AsyncIterator[tuple[int, str]]:
    """Mosquitto when it is installed (unless ``embedded``), else amqtt in this process."""
    port = free_port()
    binary = None if embedded else find_mosquitto()
    if binary is not None:
        # its own session: the Ctrl-C meant for the demo must not kill the broker before the
        # backlog has drained (a terminal sends SIGINT to the whole foreground process group)
        proc = await asyncio.to_thread(start_mosquitto, binary, workdir, port, own_session=True)
        try:
            yield port, f"mosquitto (pid {proc.pid})"
        finally:
            await asyncio.to_thread(stop_process, proc)
        return
    try:
        from amqtt.broker import Broker  # noqa: PLC0415 - optional: only when mosquitto is absent
    except ImportError:
        raise SystemExit(
            "the demo needs an MQTT broker: install mosquitto (apt-get install mosquitto) "
            "or the demo extra (pip install 'street-gateway[demo]')"
        ) from None
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    logging.getLogger("transitions").setLevel(logging.ERROR)
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    try:
        yield port, "embedded amqtt broker" + ("" if embedded else " (mosquitto is not installed)")
    finally:
        await broker.shutdown()


# ---------------------------------------------------------------------------------------------
# The live view


class RecentLog(logging.Handler):
    """Keeps the last few log lines for the live view, which would otherwise scroll them away."""

    def __init__(self, keep: int = 6) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record).splitlines()[0])


@contextlib.contextmanager
def logs_into(view_log: RecentLog) -> Iterator[None]:
    """While the view is on screen, log lines go into it instead of the terminal."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [view_log]
    try:
        yield
    finally:
        root.handlers = saved


def render(
    daemon: Daemon,
    upstream: Upstream,
    link: CuttableLink,
    status_url: str,
    *,
    recent: Sequence[str] = (),
    width: int = 100,
) -> str:
    uplink = daemon.uplink_stats()
    buffer = daemon.buffer_stats()
    rate = upstream.rate()
    lines = [
        f"street-gateway demo — gateway {GATEWAY_ID} — status page {status_url}",
        "",
        f"{'device':<16} {'state':<8} {'reads':>6}  latest values",
    ]
    for source in daemon.sources():
        for device in source.devices:
            values = "  ".join(
                f"{point}={_fmt(value)}" for point, value in list(device.last_values.items())[:5]
            )
            row = f"{device.name:<16} {device.state:<8} {device.reads_ok:>6}  {values}"
            lines.append(row if len(row) <= width else row[: width - 1] + "…")
    link_state = "UP" if link.is_up else "CUT (simulated outage)"
    uplink_state = f"connected to {uplink.server}" if uplink.connected else "disconnected"
    committed = buffer.last_seq
    lines += [
        "",
        f"link: {link_state:<24} uplink: {uplink_state}",
        f"messages/s upstream: {rate:5.1f}   backlog in buffer: {buffer.samples:>6}   "
        f"published: {uplink.published_total}",
        f"link cost: {format_link_cost(asdict(uplink))}",
        f"delivered {upstream.delivered():,} of {committed:,} stored samples and alarms"
        + ("  — nothing lost" if upstream.delivered() >= committed > 0 else ""),
    ]
    lines.append(_seal_line(daemon, upstream))
    if upstream.alarms:
        lines.append("recent alarms: " + "; ".join(upstream.alarms))
    if upstream.results:
        lines.append("recent writes: " + "; ".join(upstream.results))
    if recent:
        lines += ["", "recent log lines:"]
        lines += [f"  {line}"[:width] for line in recent]
    lines.append("")
    lines.append("Ctrl-C to stop.")
    return "\n".join(lines)


def _seal_line(daemon: Daemon, upstream: Upstream) -> str:
    """What the upstream proved of the stream so far, with the gateway's key (the demo's
    stand-in for the key the city registered at commissioning: docs/transparency.md)."""
    seals = upstream.seals
    seals.settle(daemon.identity)
    line = f"sealed and verified: {seals.verified:,} of {seals.sealed:,}"
    if seals.mismatched:
        return line + f" — {seals.mismatched} seals do NOT match what arrived"
    return line + ("  — nothing altered" if seals.sealed and seals.verified == seals.sealed else "")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


async def show(
    daemon: Daemon,
    upstream: Upstream,
    link: CuttableLink,
    status_url: str,
    recent: RecentLog | None,
) -> None:
    """Redraw the view in place on a terminal; elsewhere print a summary line every 5 s."""
    last_plain = 0.0
    while True:
        await asyncio.sleep(REFRESH_S)
        if recent is not None:
            width = shutil.get_terminal_size().columns
            text = render(daemon, upstream, link, status_url, recent=recent.lines, width=width)
            sys.stdout.write("\x1b[H\x1b[J" + text + "\n")
            sys.stdout.flush()
        elif time.monotonic() - last_plain >= 5:
            last_plain = time.monotonic()
            buffer = daemon.buffer_stats()
            print(
                f"delivered {upstream.delivered():,} of {buffer.last_seq:,}, "
                f"backlog {buffer.samples}, link {'up' if link.is_up else 'CUT'}; "
                f"{_seal_line(daemon, upstream)}",
                flush=True,
            )


async def outages(link: CuttableLink, outage_s: float) -> None:
    """Up for outage_s, cut for outage_s, and again."""
    while True:
        await asyncio.sleep(outage_s)
        link.cut()
        log.warning("demo: cutting the uplink for %gs", outage_s)
        await asyncio.sleep(outage_s)
        link.restore()
        log.warning("demo: uplink restored")


async def operator(broker_port: int, key: SigningKey, every_s: float = COMMAND_EVERY_S) -> None:
    """The demo's operations centre: a signed write to the speed sign every ``every_s``."""
    limits = itertools.cycle((30, 50))
    await asyncio.sleep(10.0)
    while True:
        doc = {"id": f"demo-{secrets.token_hex(4)}", "ts": int(time.time() * 1000),
               "op": "write", "device": "barrier-1", "point": "speed_limit",
               "value": next(limits), "by": OPERATOR}  # fmt: skip
        payload = json.dumps(sign(doc, key.sign)).encode()
        with contextlib.suppress(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", broker_port, identifier="demo-operator") as c:
                await c.publish(f"{TOPIC_PREFIX}/{GATEWAY_ID}/commands", payload, qos=1)
        await asyncio.sleep(every_s)


async def stop_on_signal(
    daemon: Daemon, link: CuttableLink, outage: asyncio.Task[None] | None
) -> None:
    """On Ctrl-C or SIGTERM: end any outage, stop polling and let the backlog drain (<= 10 s)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        if outage is not None:
            outage.cancel()
        link.restore()
        print("\nstopping: polling stopped, sending what is still in the buffer")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        daemon.request_stop(drain_s=10.0)


# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="street-gateway-demo-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def run_demo(
    outage_s: float | None, status_port: int | None = None, *, embedded_broker: bool = False
) -> int:
    tty = sys.stdout.isatty()
    with _workdir() as workdir:
        async with contextlib.AsyncExitStack() as stack:
            broker_port, broker_name = await stack.enter_async_context(
                local_broker(workdir, embedded=embedded_broker)
            )
            link = await stack.enter_async_context(CuttableLink("127.0.0.1", broker_port))
            modbus_port = free_port()
            units = [SimUnit(unit, profile) for unit, _, profile, _ in MODBUS_UNITS]
            await stack.enter_async_context(serve_tcp(units, modbus_port))
            noise = await stack.enter_async_context(
                SimulatedSerialSensor(workdir / "noise-tty", mode="stream", period=1.0)
            )
            if status_port is None:
                status_port = 8470 if port_is_free(8470) else free_port()
            elif status_port == 0:
                status_port = free_port()
            key = SigningKey.generate()  # the demo operator's: lives as long as the demo
            (workdir / f"{OPERATOR}.pub").write_text(key.public.pem())
            config = demo_config(
                modbus_port=modbus_port,
                noise_tty=noise.path,
                broker_port=link.port,
                status_port=status_port,
                state_dir=workdir,
                operator_key=workdir / f"{OPERATOR}.pub",
            )
            config_path = workdir / "gateway.yaml"
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            daemon = Daemon(load_config(config_path, installed()))
            status_url = f"http://127.0.0.1:{status_port}/"
            print(f"broker: {broker_name} on 127.0.0.1:{broker_port}")
            print(f"config: {config_path}")
            print(f"status page: {status_url}")
            upstream = Upstream()
            recent = RecentLog() if tty else None
            if recent is not None:
                stack.enter_context(logs_into(recent))
            async with asyncio.TaskGroup() as group:
                helpers = [
                    group.create_task(
                        subscribe(
                            broker_port, f"{TOPIC_PREFIX}/{GATEWAY_ID}/#", upstream, "demo-upstream"
                        ),
                        name="upstream",
                    ),
                    group.create_task(
                        show(daemon, upstream, link, status_url, recent), name="view"
                    ),
                    group.create_task(operator(broker_port, key), name="operator"),
                ]
                outage = (
                    group.create_task(outages(link, outage_s), name="outages") if outage_s else None
                )
                stopper = group.create_task(
                    stop_on_signal(daemon, link, outage), name="stop-on-signal"
                )
                await daemon.run(handle_signals=False)  # returns once stopper stopped it
                # The broker acknowledged the last messages; give them a moment to reach us.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2):
                        while upstream.delivered() < daemon.buffer_stats().last_seq:  # noqa: ASYNC110
                            await asyncio.sleep(0.05)
                for task in (*helpers, stopper):
                    task.cancel()
            delivered, committed = upstream.delivered(), daemon.buffer_stats().last_seq
            print(
                f"\ndemo stopped: delivered {delivered:,} of {committed:,} stored samples and "
                f"alarms; {committed - delivered:,} were still in the buffer"
                if delivered < committed
                else f"\ndemo stopped: delivered {delivered:,} of {committed:,}, nothing lost"
            )
            print(_seal_line(daemon, upstream))
    return 0


def main(outage: str | None, status_port: int | None = None, embedded_broker: bool = False) -> int:
    try:
        outage_s = parse_duration(outage) if outage else None
    except ValueError as exc:
        print(f"--outage: {exc}", file=sys.stderr)
        return 2
    if not os.environ.get("STREET_GATEWAY_CLOCK"):
        os.environ["STREET_GATEWAY_CLOCK"] = "synced"  # a demo machine's clock is what it is
    try:
        return asyncio.run(run_demo(outage_s, status_port, embedded_broker=embedded_broker))
    except KeyboardInterrupt:  # Ctrl-C before the handlers were in place
        return 0
