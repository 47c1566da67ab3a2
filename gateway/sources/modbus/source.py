"""Modbus RTU and TCP sources: poll devices, decode with ``codec.registers``.

One :class:`ModbusSource` per configured source owns one transport (``transport.py``:
pymodbus's RTU client on a serial port; for Modbus TCP our lean
:class:`~gateway.sources.modbus.mbap_client.MbapClient`, at about half pymodbus's CPU per read, or
:class:`~gateway.sources.modbus.rtu_tcp_client.RtuTcpClient` for ``framing: rtu``; each maps its
errors through its own table) and one scheduler task that polls all of its devices, one after
another. So one transaction is on the wire at a time without a lock: RS-485 is half duplex, and
many Modbus TCP gateways take one request at a time anyway; polling from one task means a
transaction's timeout measures the device, not the queue, and devices that fall due on the same
tick cost one wake-up, not one each plus a lock hand-over. A serial bus leaves a short gap
between frames, and a device's ``pause`` a longer one before each of its requests.

Each device is read in the plan its read limits allow (``max_registers``, ``max_bits``,
``max_gap``, ``one_request_per_point``: ``codec.registers.plan_device``). A merged read that
the device refuses with exception 2 (illegal data address) or 3 (illegal data value) is split
in halves, then halves of those, and the pieces that work are kept for every later poll; the
device's ``read_mode`` in the status says why.

Health, the drift-free schedule, the backoff of a down device (one attempt, no retries, at
most once per backoff period, so a dead unit costs the others at most one timeout per period)
and the effective interval are the shared device core's (``sources/device.py``); this module
only reads and decodes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

from gateway.backoff import Backoff
from gateway.codec import mbap
from gateway.codec.registers import (
    DecodeError,
    ReadRequest,
    RequestDecoder,
    decode,
    halve_request,
    plan_device,
)
from gateway.codec.writes import Encoded, Refused, encode_exact, set_bit
from gateway.commands.outcome import Outcome
from gateway.errors import DeviceError, DeviceProtocolError, DeviceTimeout
from gateway.model import DeviceStats, Sample, SampleSink, Value, now_ms
from gateway.sources.device import DOWN_AFTER, Device, run_schedule
from gateway.sources.modbus.config import (
    ModbusDevice,
    ModbusRtuSource,
    ModbusTcpSource,
    ReadLimits,
)
from gateway.sources.modbus.mbap_client import MbapClient
from gateway.sources.modbus.points import ModbusPoint
from gateway.sources.modbus.rtu_tcp_client import RtuTcpClient
from gateway.sources.modbus.transport import Transport, map_errors

log = logging.getLogger("gateway.sources.modbus")

__all__ = ["DOWN_AFTER", "ModbusSource", "default_frame_gap", "make_transport"]

T = TypeVar("T")
ReadData: TypeAlias = list[int] | list[bool]  # what a read answered: registers, or bits
# Exception codes with which devices refuse a merged read: it is then read in smaller pieces.
REFUSALS = {2: "illegal data address", 3: "illegal data value"}


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
    core: Device
    plan: list[ReadRequest]
    limits: ReadLimits = field(default_factory=ReadLimits)
    # per request of the plan, compiled on first use (a split plan adds its pieces)
    decoders: dict[ReadRequest, RequestDecoder] = field(default_factory=dict)

    @property
    def stats(self) -> DeviceStats:
        return self.core.stats


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
        self._devices = [self._device(device) for device in config.devices]
        self._by_core = {id(d.core): d for d in self._devices}
        self._by_name = {d.config.name: d for d in self._devices}
        # With writable points, a write's read-modify-write and read-back take the bus between
        # two polls' transactions; without, the one polling task needs no lock.
        self._writable = any(p.write for d in config.devices for p in d.points)
        self._bus = asyncio.Lock()
        self._client: Transport | None = None
        self._last_end = 0.0  # loop time the last transaction on the connection ended
        self._reconnect_at = 0.0
        self._reconnect = Backoff(0.1, config.backoff_max, rng=lambda: 1.0)
        self._reconnect_delay = 0.0

    def _device(self, device: ModbusDevice) -> _Device:
        limits = self._config.limits(device)
        core = Device(
            device.name,
            self._config.name,
            device.interval,
            backoff_max_s=self._config.backoff_max,
            timeout_s=self._config.timeout,
            label=f"{device.name} (unit {device.unit})",
            logger=log,
        )
        if limits.one_request_per_point:
            core.stats.read_mode = "one request per point (one_request_per_point: true)"
        return _Device(
            config=device,
            core=core,
            plan=plan_device(device.points, limits),
            limits=limits,
        )

    @property
    def cores(self) -> list[Device]:
        return [d.core for d in self._devices]

    @property
    def devices(self) -> list[DeviceStats]:
        return [d.stats for d in self._devices]

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def link_counters(self) -> dict[str, int]:
        """The transport's own error counters when it keeps some (RTU over TCP), for /status."""
        counters = getattr(self._client, "link_counters", None)
        return dict(counters) if counters else {}

    async def run(self) -> None:
        """Poll every device until cancelled; the client is closed on every exit."""
        self._client = self._make_client()
        try:
            await self._schedule()
        finally:
            self._client.close()
            self._client = None

    def _make_client(self) -> Transport:
        return make_transport(self._config, frame_gap_s=self._frame_gap)

    async def _schedule(self) -> None:
        await run_schedule(self.cores, self._poll_core, logger=log)

    async def _poll_core(self, core: Device) -> None:
        """One poll; its outcome becomes the device's state."""
        device = self._by_core[id(core)]
        error = await self._poll(device)
        if error is not None:
            core.failed(error)
        else:
            core.succeeded()

    # -----------------------------------------------------------------------------------------
    # One poll: every request of the plan, in order

    async def _poll(self, device: _Device) -> str | None:
        """Read every request; the last exception response that stopped one, or None."""
        error: str | None = None
        attempts = device.core.attempts(self._config.retries)
        started_ms = now_ms()
        values: dict[str, Value] = {}
        index = 0
        while index < len(device.plan):
            request = device.plan[index]
            try:
                data = await self._read(device, request, attempts)
            except ExceptionResponse as exc:
                parts = halve_request(request, device.config.points)
                if exc.code in REFUSALS and len(parts) > 1:
                    device.plan[index : index + 1] = parts
                    self._read_in_pieces(device, request, exc.code)
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

    def _read_in_pieces(self, device: _Device, request: ReadRequest, code: int) -> None:
        """Say (once in the log, always in the status) why the device is read in pieces."""
        stats = device.stats
        refused = f"{request.table} {request.address}+{request.count}"
        why = f"exception {code} ({REFUSALS[code]})"
        if stats.read_mode is None:
            log.warning(
                "%s (unit %d): answered %s to a read of %s; reading it in smaller pieces",
                stats.name,
                device.config.unit,
                why,
                refused,
            )
        stats.read_mode = (
            f"in pieces ({len(device.plan)} requests a poll): it answered {why} "
            f"to a read of {refused}"
        )

    def _decode(
        self, device: _Device, request: ReadRequest, data: ReadData, values: dict[str, Value]
    ) -> None:
        decoder = device.decoders.get(request)
        if decoder is None:
            decoder = device.decoders[request] = RequestDecoder(request, device.config.points)
        errors = decoder.decode_into(data, values)
        if errors:
            device.stats.parse_errors += len(errors)

    async def _read(self, device: _Device, request: ReadRequest, attempts: int) -> ReadData:
        """One transaction with up to ``attempts`` tries: the registers or bits, or raise."""
        last: DeviceError = DeviceTimeout("no attempt")
        for _ in range(attempts):
            try:
                return await self._transact(device, request)
            except ExceptionResponse:
                raise
            except DeviceError as exc:  # a timeout, not connected, a bad frame: try again
                last = exc
        raise last

    async def _transact(self, device: _Device, request: ReadRequest) -> ReadData:
        if self._writable:
            async with self._bus:
                return await self._transact_unlocked(device, request)
        return await self._transact_unlocked(device, request)

    async def _transact_unlocked(self, device: _Device, request: ReadRequest) -> ReadData:
        client = self._client
        if client is None or not client.connected:  # the usual case skips a coroutine
            client = await self._connected_client()
        loop = asyncio.get_running_loop()
        if device.limits.pause:  # the device needs a quiet spell after the last request
            wait = self._last_end + device.limits.pause - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        device.stats.requests_total += 1
        try:
            with map_errors(client.errors, self._config.timeout):
                values = await client.read(
                    request.table, request.address, request.count, device.config.unit
                )
        except mbap.ExceptionAnswer as exc:
            raise ExceptionResponse(exc.code, request) from None
        finally:
            self._last_end = loop.time()
        return values  # each client returns a list of its own: no copy

    async def _connected_client(self) -> Transport:
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
            self._reconnect.reset()
            self._reconnect_delay = 0.0
            return client
        first = not self._reconnect_delay
        self._reconnect_delay = self._reconnect.next_delay()
        self._reconnect_at = loop.time() + self._reconnect_delay
        if first:
            log.warning("%s: cannot connect to %s", self.name, _where(self._config))
        raise DeviceError(f"cannot connect to {_where(self._config)}")

    # -----------------------------------------------------------------------------------------
    # Writes (since v0.3): encode exactly, send once, read back, all under the bus lock

    async def write(self, device_name: str, point_name: str, value: Value) -> Outcome:
        """Write ``value`` to a writable point, once; how it ended (never raises a DeviceError).

        Authorisation (limits, rate) is the caller's; this refuses only what the point cannot
        take (not writable, not representable), and fails with the device's answer.
        """
        device = self._by_name.get(device_name)
        points = device.config.points if device else []
        point = next((p for p in points if p.name == point_name), None)
        if device is None or point is None or point.write is None:
            return Outcome.refused("not_writable", f"{device_name}/{point_name} is not writable")
        try:
            encoded = encode_exact(point, value)
        except Refused as exc:
            return Outcome.refused(exc.reason, exc.detail)
        if device.core.state == "down":
            why = device.stats.last_error
            return Outcome.failed("device_down", f"{device_name} is down: {why}")
        async with self._bus:
            try:
                await self._send(device, encoded)
            except DeviceError as exc:
                return _failure(exc, "")
            if point.write.confirm == "none":
                return Outcome("done", detail="written (no read-back: confirm: none)")
            try:
                back = await self._read_point(device, point)
            except DeviceError as exc:
                return _failure(exc, "written; the read-back: ")
        device.stats.last_values[point.name] = back
        self._sink(Sample(device_name, now_ms(), {point.name: back}))  # the read-back is a reading
        if back != value or isinstance(back, bool) != isinstance(value, bool):
            return Outcome.failed(
                "readback_mismatch", f"wrote {value!r}, read back {back!r}", read_back=back
            )
        return Outcome("done", read_back=back)

    async def _send(self, device: _Device, encoded: Encoded) -> None:
        """The write's request (a bit: read its register, then write it back changed)."""
        unit = device.config.unit
        words = encoded.words
        if encoded.bit is not None:
            address = encoded.address
            (word,) = await self._exchange(device, lambda c: c.read("holding", address, 1, unit))
            words = (set_bit(int(word), encoded.bit, bool(words[0])),)
        function = encoded.function
        await self._exchange(device, lambda c: c.write(function, encoded.address, words, unit))

    async def _read_point(self, device: _Device, point: ModbusPoint) -> Value:
        unit = device.config.unit
        data = await self._exchange(
            device, lambda c: c.read(point.table, point.address, point.width, unit)
        )
        if point.is_bit_table:
            return bool(data[0])
        try:
            return decode(point, [int(w) for w in data])
        except DecodeError as exc:
            raise DeviceProtocolError(str(exc)) from None

    async def _exchange(self, device: _Device, call: Callable[[Transport], Awaitable[T]]) -> T:
        """One transaction of a write, with the device's pause; the caller holds the bus."""
        client = self._client
        if client is None or not client.connected:
            client = await self._connected_client()
        loop = asyncio.get_running_loop()
        if device.limits.pause:
            wait = self._last_end + device.limits.pause - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        device.stats.requests_total += 1
        try:
            with map_errors(client.errors, self._config.timeout):
                return await call(client)
        except mbap.ExceptionAnswer as exc:
            raise _WriteException(exc.code) from None
        finally:
            self._last_end = loop.time()


class _WriteException(DeviceProtocolError):
    def __init__(self, code: int) -> None:
        super().__init__(f"exception code {code}")
        self.code = code


def _failure(exc: DeviceError, context: str) -> Outcome:
    """The reason word of a write's (or its read-back's) error."""
    if isinstance(exc, _WriteException):
        return Outcome.failed(f"exception_{exc.code}", f"{context}the device answered {exc}")
    if isinstance(exc, DeviceTimeout | DeviceProtocolError):  # no (valid) answer in time
        return Outcome.failed("timeout", f"{context}{exc}")
    return Outcome.failed("device_down", f"{context}{exc}")


def _where(config: ModbusRtuSource | ModbusTcpSource) -> str:
    if isinstance(config, ModbusRtuSource):
        return config.port
    return f"{config.host}:{config.port}"


def make_transport(
    config: ModbusRtuSource | ModbusTcpSource, *, frame_gap_s: float = 0.0
) -> Transport:
    """The transport a source's config names: RS-485 through pymodbus, Modbus TCP (MBAP) or
    RTU frames over TCP through our own clients."""
    if isinstance(config, ModbusRtuSource):
        # pymodbus (~2 MB resident) is imported only where an RTU bus is polled
        from gateway.sources.modbus.serial_rtu_client import SerialRtuClient  # noqa: PLC0415

        return SerialRtuClient(
            config.port,
            config.baudrate,
            config.parity,
            config.stopbits,
            config.bytesize,
            timeout_s=config.timeout,
            frame_gap_s=frame_gap_s,
        )
    if config.framing == "rtu":
        return RtuTcpClient(config.host, config.port, timeout_s=config.timeout)
    return MbapClient(config.host, config.port, timeout_s=config.timeout)
