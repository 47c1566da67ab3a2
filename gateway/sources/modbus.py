"""Modbus RTU and TCP sources: poll devices, decode with ``codec.registers``.

One :class:`ModbusSource` per configured source owns one client (pymodbus's RTU client on a
serial port; for Modbus TCP our lean :class:`~gateway.sources.mbap_client.MbapClient`, at about
half pymodbus's CPU per read) and one scheduler task that polls all of its devices, one after
another. So one transaction is on the wire at a time without a lock: RS-485 is half duplex, and
many Modbus TCP gateways take one request at a time anyway; polling from one task means a
transaction's timeout measures the device, not the queue, and devices that fall due on the same
tick cost one wake-up, not one each plus a lock hand-over. A serial bus leaves a short gap
between frames.

Each device is polled at its ``interval`` on a drift-free schedule (a heap of next due times):
a poll that comes late skips the ticks it missed (``polls_skipped``) instead of bursting. A
device goes ``ok`` -> ``failing`` on its first failed poll and ``down`` after
:data:`DOWN_AFTER` in a row; a down device is tried with one attempt (no retries) after a
backoff that doubles up to the source's ``backoff_max``, so a dead unit costs the others at most
one timeout per backoff period. Every exception is caught inside the device's poll: one device
never stops the others.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.codec import mbap
from gateway.codec.registers import DecodeError, ReadRequest, RequestDecoder, plan_requests
from gateway.codec.registers import split_request as _split
from gateway.config import ModbusDevice, ModbusRtuSource, ModbusTcpSource
from gateway.errors import DeviceError, DeviceProtocolError, DeviceTimeout
from gateway.model import DeviceStats, Sample, SampleSink, Value, now_ms
from gateway.sources.mbap_client import MbapClient

if TYPE_CHECKING:  # pymodbus (~2 MB resident) is imported only where a client is made
    from pymodbus.client import AsyncModbusSerialClient

    SourceClient = MbapClient | AsyncModbusSerialClient  # Modbus TCP goes through our client

log = logging.getLogger(__name__)

DOWN_AFTER = 3  # consecutive failed polls before a device is "down"
ILLEGAL_DATA_ADDRESS = 2


class ExceptionResponse(DeviceProtocolError):
    """The device answered with a Modbus exception response."""

    def __init__(self, code: int, request: ReadRequest) -> None:
        super().__init__(
            f"exception code {code} reading {request.table} {request.address}+{request.count}"
        )
        self.code = code


@dataclass
class _Device:
    config: ModbusDevice
    stats: DeviceStats
    plan: list[ReadRequest]
    failures: int = 0  # consecutive failed polls
    backoff_s: float = 0.0
    split: bool = False  # re-planned after "illegal data address"
    # per request of the plan, compiled on first use (a split plan adds its pieces)
    decoders: dict[ReadRequest, RequestDecoder] = field(default_factory=dict)
    # per point index: its name, so a sample is built without going back to the config
    names: list[str] = field(default_factory=list)


def default_frame_gap(baudrate: int) -> float:
    """Modbus RTU's silent interval: 3.5 characters of 11 bits, at least 1.75 ms."""
    return max(3.5 * 11 / baudrate, 0.00175)


class ModbusSource:
    """Polls every device of one Modbus source and hands one sample per poll to ``sink``."""

    def __init__(
        self,
        config: ModbusRtuSource | ModbusTcpSource,
        sink: SampleSink,
        *,
        frame_gap_s: float | None = None,
    ) -> None:
        self._config = config
        self._sink = sink
        if frame_gap_s is None:
            rtu = config if isinstance(config, ModbusRtuSource) else None
            frame_gap_s = default_frame_gap(rtu.baudrate) if rtu else 0.0
        self._frame_gap = frame_gap_s
        self._devices = [
            _Device(
                config=device,
                stats=DeviceStats(name=device.name, source=config.name, interval_s=device.interval),
                plan=plan_requests(device.points),
                names=[p.name for p in device.points],
            )
            for device in config.devices
        ]
        self._client: SourceClient | None = None
        self._reconnect_at = 0.0
        self._reconnect_delay = 0.0

    @property
    def devices(self) -> list[DeviceStats]:
        return [d.stats for d in self._devices]

    @property
    def name(self) -> str:
        return self._config.name

    async def run(self) -> None:
        """Poll every device until cancelled; the client is closed on every exit."""
        self._client = self._make_client()
        try:
            await self._schedule()
        finally:
            self._client.close()
            self._client = None

    def _make_client(self) -> SourceClient:
        c = self._config
        if isinstance(c, ModbusRtuSource):
            return serial_client(
                c.port, c.baudrate, c.parity, c.stopbits, c.bytesize, timeout_s=c.timeout
            )
        return MbapClient(c.host, c.port, timeout_s=c.timeout)

    # -----------------------------------------------------------------------------------------
    # Scheduling

    async def _schedule(self) -> None:
        """Poll the device due first, reschedule it, repeat; sleep while none is due."""
        if not self._devices:
            await asyncio.Future()  # nothing to poll: wait for the cancellation
        loop = asyncio.get_running_loop()
        start = loop.time()
        # (due, index): the index breaks ties, so devices due together go in config order
        heap = [(start, index) for index in range(len(self._devices))]
        while True:
            due, index = heap[0]
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            device = self._devices[index]
            await self._poll_guarded(device)
            _raise_if_cancelling()
            heapq.heapreplace(heap, (self._next_due(device, due, loop.time()), index))

    def _next_due(self, device: _Device, due: float, now: float) -> float:
        """When ``device`` polls next, after its poll that was due at ``due`` ended at ``now``."""
        if device.stats.state == "down":
            return now + device.backoff_s  # not aligned: the ticks meanwhile are given up
        interval = device.config.interval
        if device.backoff_s:  # back from down: restart the schedule from now
            device.backoff_s = 0.0
            due = now
        due += interval
        if due <= now:
            missed = int((now - due) // interval) + 1
            device.stats.polls_skipped += missed
            due += missed * interval
        return due

    async def _poll_guarded(self, device: _Device) -> None:
        """One poll; every failure becomes the device's state, never an exception."""
        try:
            error = await self._poll(device)
        except DeviceError as exc:
            self._failed(device, str(exc))
        except Exception as exc:  # one device must never stop the others
            log.exception("%s: unexpected error while polling", device.stats.name)
            self._failed(device, f"{type(exc).__name__}: {exc}")
        else:
            if error is not None:
                self._failed(device, error)
            else:
                self._succeeded(device)

    def _succeeded(self, device: _Device) -> None:
        stats = device.stats
        stats.reads_ok += 1
        stats.last_ok_ts = now_ms()
        if stats.state in ("failing", "down"):  # not a first success: unknown -> ok
            log.info(
                "%s (unit %d): answering again after %d failed polls",
                stats.name,
                device.config.unit,
                device.failures,
            )
        stats.state = "ok"
        stats.last_error = None
        device.failures = 0

    def _failed(self, device: _Device, error: str) -> None:
        stats = device.stats
        stats.reads_failed += 1
        stats.last_error = error
        device.failures += 1
        if device.failures >= DOWN_AFTER:
            base = max(device.config.interval, self._config.timeout)
            cap = max(self._config.backoff_max, device.config.interval)
            device.backoff_s = min(base * 2 ** (device.failures - DOWN_AFTER + 1), cap)
            if stats.state != "down":
                log.warning(
                    "%s (unit %d): down after %d failed polls (%s); retrying every %gs at most",
                    stats.name,
                    device.config.unit,
                    device.failures,
                    error,
                    cap,
                )
            stats.state = "down"
        elif stats.state in ("unknown", "ok"):
            log.warning("%s (unit %d): poll failed: %s", stats.name, device.config.unit, error)
            stats.state = "failing"

    # -----------------------------------------------------------------------------------------
    # One poll: every request of the plan, in order

    async def _poll(self, device: _Device) -> str | None:
        """Read every request; the last exception response that stopped one, or None."""
        error: str | None = None
        attempts = 1 if device.stats.state == "down" else self._config.retries + 1
        started_ms = now_ms()
        values: dict[str, Value] = {}
        index = 0
        while index < len(device.plan):
            request = device.plan[index]
            try:
                data, _ = await self._read(device, request, attempts)
            except ExceptionResponse as exc:
                if exc.code == ILLEGAL_DATA_ADDRESS and len(request.points) > 1:
                    parts = _split(request, device.config.points)
                    device.plan[index : index + 1] = parts
                    if not device.split:
                        log.warning(
                            "%s (unit %d): refuses merged reads (%s); reading point by point",
                            device.stats.name,
                            device.config.unit,
                            exc,
                        )
                    device.split = True
                    continue  # read the smaller pieces now
                error = str(exc)
                index += 1
                continue
            self._decode(device, request, data, values)
            index += 1
        if values:  # the points that were read, even when a table failed
            device.stats.last_values.update(values)
            self._sink(Sample(device.stats.name, started_ms, values))
        return error

    def _decode(
        self, device: _Device, request: ReadRequest, data: list[Any], values: dict[str, Value]
    ) -> None:
        decoder = device.decoders.get(request)
        if decoder is None:
            decoder = device.decoders[request] = RequestDecoder(request, device.config.points)
        names = device.names
        for i, value in decoder(data):
            if isinstance(value, DecodeError):
                device.stats.parse_errors += 1
            else:
                values[names[i]] = value

    async def _read(
        self, device: _Device, request: ReadRequest, attempts: int
    ) -> tuple[list[Any], int]:
        """One transaction with up to ``attempts`` tries; (registers or bits, ts) or raise."""
        last: DeviceError = DeviceTimeout("no attempt")
        for _ in range(attempts):
            try:
                return await self._transact(device, request)
            except ExceptionResponse:
                raise
            except DeviceError as exc:  # a timeout, not connected, a bad frame: try again
                last = exc
        raise last

    async def _transact(self, device: _Device, request: ReadRequest) -> tuple[list[Any], int]:
        client = await self._connected_client()
        device.stats.requests_total += 1
        if isinstance(client, MbapClient):
            return await self._transact_tcp(client, device, request), now_ms()
        return await self._transact_rtu(client, device, request)

    async def _transact_rtu(
        self, client: AsyncModbusSerialClient, device: _Device, request: ReadRequest
    ) -> tuple[list[Any], int]:
        from pymodbus.exceptions import (  # noqa: PLC0415 - pymodbus only where RTU is polled
            ConnectionException,
            ModbusException,
            ModbusIOException,
        )

        timeout = self._config.timeout
        try:
            # pymodbus times the answer out itself; this guard only bounds the worst case
            async with asyncio.timeout(timeout + max(0.1, timeout / 2)):
                response = await read_table(
                    client, request.table, request.address, request.count, device.config.unit
                )
        except (TimeoutError, ModbusIOException) as exc:
            raise DeviceTimeout(f"no answer within {timeout:g}s") from exc
        except ConnectionException as exc:
            raise DeviceError(f"connection lost: {exc}") from exc
        except ModbusException as exc:
            raise DeviceProtocolError(str(exc)) from exc
        finally:
            if self._frame_gap:
                await asyncio.sleep(self._frame_gap)
        if response.isError():
            raise ExceptionResponse(int(getattr(response, "exception_code", 0)), request)
        ts_ms = now_ms()
        if request.table in ("coil", "discrete"):
            return list(response.bits[: request.count]), ts_ms
        if len(response.registers) != request.count:
            raise DeviceProtocolError(
                f"asked {request.count} registers, got {len(response.registers)}"
            )
        return list(response.registers), ts_ms

    async def _transact_tcp(
        self, client: MbapClient, device: _Device, request: ReadRequest
    ) -> list[Any]:
        try:
            values: list[Any] = await client.read(
                request.table, request.address, request.count, device.config.unit
            )
        except TimeoutError:
            raise DeviceTimeout(f"no answer within {self._config.timeout:g}s") from None
        except mbap.ExceptionAnswer as exc:
            raise ExceptionResponse(exc.code, request) from None
        except mbap.FramingError as exc:
            raise DeviceProtocolError(str(exc)) from None
        except OSError as exc:  # ConnectionError included
            raise DeviceError(f"connection lost: {exc}") from None
        return values

    async def _connected_client(self) -> SourceClient:
        """The client, (re)connected if needed, with capped backoff between attempts."""
        timeout = self._config.timeout
        client = self._client
        if client is None:
            raise DeviceError("source is not running")
        if client.connected:
            return client
        loop = asyncio.get_running_loop()
        if loop.time() < self._reconnect_at:
            raise DeviceError("not connected (waiting to reconnect)")
        try:
            async with asyncio.timeout(timeout + 1.0):
                ok = await client.connect()
        except TimeoutError:
            ok = False
        if ok and client.connected:
            if self._reconnect_delay:
                log.info("%s: connected again", self.name)
            self._reconnect_delay = 0.0
            return client
        first = not self._reconnect_delay
        self._reconnect_delay = min(max(2 * self._reconnect_delay, 0.1), self._config.backoff_max)
        self._reconnect_at = loop.time() + self._reconnect_delay
        if first:
            log.warning("%s: cannot connect to %s", self.name, _where(self._config))
        raise DeviceError(f"cannot connect to {_where(self._config)}")


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation that a poll swallowed.

    pymodbus awaits each answer with ``asyncio.wait_for``, which on Python 3.11 returns the
    answer and drops the cancellation when both arrive in the same loop turn (fixed in 3.12).
    Under fast polling that race is common, and a lost cancellation left the poll loop running,
    so SIGTERM never finished. The task still counts the request (``cancelling()``).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _where(config: ModbusRtuSource | ModbusTcpSource) -> str:
    if isinstance(config, ModbusRtuSource):
        return config.port
    return f"{config.host}:{config.port}"


# retries=0: we retry ourselves, so a down device can be tried once per backoff period;
# reconnect_delay=0: no reconnect task inside pymodbus, we reconnect with our own backoff.


def serial_client(
    port: str, baudrate: int, parity: str, stopbits: int, bytesize: int, *, timeout_s: float
) -> AsyncModbusSerialClient:
    """A Modbus RTU client that neither retries nor reconnects on its own."""
    from pymodbus.client import AsyncModbusSerialClient  # noqa: PLC0415 - see TYPE_CHECKING
    from pymodbus.framer import FramerType  # noqa: PLC0415

    return AsyncModbusSerialClient(
        port,
        framer=FramerType.RTU,
        baudrate=baudrate,
        parity=parity,
        stopbits=stopbits,
        bytesize=bytesize,
        timeout=timeout_s,
        retries=0,
        reconnect_delay=0,
    )


async def read_table(
    client: AsyncModbusSerialClient, table: str, address: int, count: int, unit: int
) -> Any:
    """One read of ``count`` registers or bits of ``table``; pymodbus's response as is."""
    read = {
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
    }[table]
    return await read(address, count=count, device_id=unit)
