"""Simulated Modbus street sensors, served by real pymodbus servers over TCP or RTU.

Each simulated unit has a profile (a register map with plausible values that change over
time) and a mode a test can change at run time: ``ok``, ``silent`` (requests are dropped, so
the client times out, as on a real bus) or ``exception`` (every read answers an exception
response). With ``max_registers`` set, a longer register read is answered exception 3
("illegal data value"), as many energy meters do. With ``strict`` set, only the registers of
the profile's points exist, so a read that bridges unused registers is answered "illegal data
address", as many real devices do. ``poke`` serves raw words (bad data) instead of a value.

    async with serve_tcp([SimUnit(1, "air_quality")], port) as sim:
        sim.unit(1).silence()

``python -m gateway.sim modbus --tcp 127.0.0.1:5020 --unit 1:air_quality`` serves the same
as a standalone process until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import math
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.codec.registers import TABLE_ORDER, encode
from gateway.model import Value
from gateway.sources.modbus.points import ModbusPoint

log = logging.getLogger(__name__)

Wave = Callable[[float], Value]  # seconds since start -> value

_FC_TABLE = {
    1: "coil",
    2: "discrete",
    3: "holding",
    4: "input",
    5: "coil",
    15: "coil",
    6: "holding",
    16: "holding",
}  # writes read their block first
_READS_KEPT = 10_000  # reads a unit remembers for tests (bounded: a sim may run for days)


def _wave(mean: float, amplitude: float, period: float, phase: float = 0.0) -> Wave:
    return lambda t: mean + amplitude * math.sin(2 * math.pi * (t + phase) / period)


def _count(rate_per_s: float, start: int = 0) -> Wave:
    return lambda t: start + int(rate_per_s * t)


def _flag(period: float, duty: float) -> Wave:
    return lambda t: (t % period) < duty * period


# name -> [(point config dict, value over time)]
_PROFILES: dict[str, list[tuple[dict[str, Any], Wave]]] = {
    "air_quality": [
        ({"name": "pm25", "table": "input", "address": 0, "type": "uint16",
          "scale": 0.1, "unit": "ug/m3"}, _wave(12.0, 6.0, 120.0)),
        ({"name": "pm10", "table": "input", "address": 1, "type": "uint16",
          "scale": 0.1, "unit": "ug/m3"}, _wave(20.0, 9.0, 150.0)),
        ({"name": "no2", "table": "input", "address": 2, "type": "uint16",
          "unit": "ug/m3"}, _wave(35.0, 15.0, 300.0)),
        ({"name": "temperature", "table": "holding", "address": 10, "type": "float32",
          "byte_order": "ABCD", "unit": "C"}, _wave(14.0, 4.0, 600.0)),
        ({"name": "humidity", "table": "holding", "address": 12, "type": "float32",
          "byte_order": "CDAB", "unit": "%"}, _wave(65.0, 15.0, 600.0, 150.0)),
    ],
    # A river gauge whose level floods past the demo's 1.45 m alarm every four minutes.
    "river_gauge": [
        ({"name": "level", "table": "input", "address": 0, "type": "uint16",
          "scale": 0.001, "unit": "m"}, _wave(1.2, 0.35, 240.0)),
        ({"name": "battery", "table": "input", "address": 1, "type": "uint16",
          "scale": 0.01, "unit": "V"}, _wave(3.6, 0.05, 3600.0)),
    ],
    # A flood barrier and the speed sign before it: writable, they keep what is written.
    "barrier": [
        ({"name": "closed", "table": "coil", "address": 0, "type": "bool",
          "write": {"confirm": "readback"}}, lambda t: False),
        ({"name": "speed_limit", "table": "holding", "address": 0, "type": "uint16",
          "unit": "km/h", "write": {"min": 20, "max": 90, "rate": "1/10s"}}, lambda t: 50),
    ],
    "water_level": [
        ({"name": "level", "table": "input", "address": 0, "type": "uint16",
          "scale": 0.001, "unit": "m"}, _wave(1.2, 0.3, 900.0)),
        ({"name": "battery", "table": "input", "address": 1, "type": "uint16",
          "scale": 0.01, "unit": "V"}, _wave(3.6, 0.05, 3600.0)),
        ({"name": "float_switch", "table": "discrete", "address": 0, "type": "bool"},
         _flag(300.0, 0.1)),
    ],
    # Register layout of a common DIN-rail meter: float32 input registers at 0, 6, 12, 342.
    "energy_meter": [
        ({"name": "voltage", "table": "input", "address": 0, "type": "float32",
          "unit": "V"}, _wave(230.0, 3.0, 60.0)),
        ({"name": "current", "table": "input", "address": 6, "type": "float32",
          "unit": "A"}, _wave(4.0, 1.5, 90.0)),
        ({"name": "power", "table": "input", "address": 12, "type": "float32",
          "unit": "W"}, _wave(920.0, 345.0, 90.0)),
        ({"name": "energy", "table": "input", "address": 342, "type": "float32",
          "unit": "kWh"}, lambda t: 1520.0 + 0.0003 * t),
    ],
    "traffic_counter": [
        ({"name": "vehicles", "table": "holding", "address": 0, "type": "uint32"},
         _count(0.5, 120_000)),
        ({"name": "cars", "table": "holding", "address": 2, "type": "uint32"},
         _count(0.45, 110_000)),
        ({"name": "trucks", "table": "holding", "address": 4, "type": "uint32"},
         _count(0.05, 10_000)),
        ({"name": "loop_fault", "table": "holding", "address": 8, "type": "bool", "bit": 0},
         lambda t: False),
        ({"name": "cabinet_open", "table": "holding", "address": 8, "type": "bool", "bit": 3},
         _flag(600.0, 0.05)),
    ],
    # Ten points of mixed types on one device (benchmarks, planner demonstrations).
    "street_cabinet": [
        ({"name": f"t{i}", "table": "holding", "address": 2 * i, "type": "int16",
          "scale": 0.1, "unit": "C"}, _wave(20.0 + i, 2.0, 60.0)) for i in range(5)
    ] + [
        ({"name": f"e{i}", "table": "holding", "address": 20 + 2 * i, "type": "float32",
          "unit": "kWh"}, _wave(100.0 * i, 1.0, 60.0)) for i in range(4)
    ] + [
        ({"name": "door_open", "table": "discrete", "address": 0, "type": "bool"},
         _flag(120.0, 0.1)),
    ],
    # A meter's nameplate in ASCII registers (issue 18), beside one measurement.
    "nameplate_meter": [
        ({"name": "serial", "table": "holding", "address": 0, "type": "string", "length": 8},
         lambda t: "SN-20261201"),
        ({"name": "model", "table": "holding", "address": 8, "type": "string", "length": 4,
          "byte_order": "BA"}, lambda t: "SDM120"),
        ({"name": "firmware", "table": "holding", "address": 12, "type": "uint16"},
         lambda t: 312),
        ({"name": "voltage", "table": "input", "address": 0, "type": "float32", "unit": "V"},
         _wave(230.0, 3.0, 60.0)),
    ],
    # Issue 7's end-to-end workload: 4 uint16, 2 int16, 4 float32 in holding registers 0..13.
    "e2e_cabinet": [
        ({"name": f"u{i}", "table": "holding", "address": i, "type": "uint16",
          "unit": "count"}, _count(0.5 + i, 100 * i)) for i in range(4)
    ] + [
        ({"name": f"s{i}", "table": "holding", "address": 4 + i, "type": "int16",
          "scale": 0.1, "unit": "C"}, _wave(5.0 * i - 2.0, 8.0, 60.0)) for i in range(2)
    ] + [
        ({"name": f"f{i}", "table": "holding", "address": 6 + 2 * i, "type": "float32",
          "unit": "V"}, _wave(230.0 + i, 3.0, 30.0 + 10 * i)) for i in range(4)
    ],
}  # fmt: skip

PROFILE_NAMES = tuple(_PROFILES)


def profile_points(name: str) -> list[dict[str, Any]]:
    """The profile's points as config dicts, ready to write under a device's ``points:``."""
    return [dict(spec) for spec, _ in _PROFILES[name]]


@dataclass
class SimUnit:
    """One simulated unit on a bus, and the knobs a test turns at run time."""

    unit: int
    profile: str
    strict: bool = False
    mode: Literal["ok", "silent", "exception"] = "ok"
    exception_code: int = int(ExcCodes.DEVICE_FAILURE)
    requests: int = 0  # requests received for this unit, answered or not
    started: float = field(default_factory=time.monotonic)
    # (table, address) -> a raw register word served instead of the profile's (see poke)
    poked: dict[tuple[str, int], int] = field(default_factory=dict)
    # like many energy meters: a register read longer than this is answered exception 3
    max_registers: int | None = None
    refused: int = 0  # reads refused for max_registers
    reads: list[tuple[str, int, int]] = field(default_factory=list)  # (table, address, count)
    # (table, address) -> what a write left there: served instead of the profile's value
    written: dict[tuple[str, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.profile not in _PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; one of {', '.join(_PROFILES)}")
        self.points = [
            (ModbusPoint.model_validate(spec), wave) for spec, wave in _PROFILES[self.profile]
        ]

    def silence(self) -> None:
        """Stop answering: every request to this unit times out."""
        self.mode = "silent"

    def answer_exceptions(self, code: int = int(ExcCodes.DEVICE_FAILURE)) -> None:
        """Answer every read with an exception response of ``code``."""
        self.mode, self.exception_code = "exception", code

    def recover(self) -> None:
        self.mode = "ok"

    def poke(self, table: str, address: int, words: Sequence[int]) -> None:
        """Serve these raw words from ``address`` on, whatever the profile says (bad data)."""
        for k, word in enumerate(words):
            self.poked[(table, address + k)] = word

    def values(self, now: float | None = None) -> dict[str, Value]:
        """The values the unit would answer right now, by point name."""
        t = (time.monotonic() if now is None else now) - self.started
        return {point.name: wave(t) for point, wave in self.points}

    def device(self) -> SimDevice:
        coils, discrete, holding, inputs = (self._block(table) for table in TABLE_ORDER)
        blocks = (coils, discrete, holding, inputs)
        return SimDevice(
            id=self.unit,
            simdata=blocks,
            action=functools.partial(_refresh, self),
        )

    def _block(self, table: str) -> list[SimData]:
        points = [p for p, _ in self.points if p.table == table]
        if table in ("coil", "discrete"):
            if not points:
                return [SimData(address=0, values=[False] * 16, datatype=DataType.BITS)]
            end = max(p.address + 1 for p in points)
            return [SimData(address=0, values=[False] * end, datatype=DataType.BITS)]
        if not points:
            return [SimData(address=0, count=1, datatype=DataType.INVALID)]
        used = sorted({a for p in points for a in range(p.address, p.address + p.width)})
        if not self.strict:
            used = list(range(used[0], used[-1] + 1))
        runs: list[list[int]] = []
        for address in used:
            if runs and address == runs[-1][-1] + 1:
                runs[-1].append(address)
            else:
                runs.append([address])
        return [
            SimData(address=run[0], values=[0] * len(run), datatype=DataType.REGISTERS)
            for run in runs
        ]

    def write_table(self, table: str, start: int, registers: list[int]) -> None:
        """Write the current values of ``table`` into a pymodbus register block in place."""
        values = self.values()
        if table in ("coil", "discrete"):
            for point, _ in self.points:
                if point.table != table:
                    continue
                index, bit = point.address // 16 - start, point.address % 16
                if self.written.get((table, point.address), values[point.name]):
                    registers[index] |= 1 << bit
                else:
                    registers[index] &= ~(1 << bit) & 0xFFFF
            return
        touched: set[int] = set()
        for point, _ in self.points:
            if point.table != table:
                continue
            words = encode(point, values[point.name])
            for k, word in enumerate(words):
                index = point.address + k - start
                if point.bit is not None:
                    if index not in touched:
                        registers[index] = 0
                    registers[index] |= word
                else:
                    registers[index] = word
                touched.add(index)
        for (poked_table, address), word in (*self.poked.items(), *self.written.items()):
            if poked_table == table and 0 <= address - start < len(registers):
                registers[address - start] = word


async def _refresh(  # noqa: PLR0917 - the signature pymodbus calls
    unit: SimUnit,
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """pymodbus's per-access hook: fresh values on every read, or the configured exception;
    a write is kept, and served from then on instead of the profile's value."""
    if set_values is not None:
        table = _FC_TABLE[function_code]
        for k, value in enumerate(set_values):
            unit.written[(table, address + k)] = int(value)
        return None
    if unit.mode == "exception":
        return ExcCodes(unit.exception_code)
    table = _FC_TABLE[function_code]
    if len(unit.reads) < _READS_KEPT:
        unit.reads.append((table, address, count))
    if unit.max_registers is not None and function_code in (3, 4) and count > unit.max_registers:
        unit.refused += 1
        return ExcCodes.ILLEGAL_VALUE
    unit.write_table(table, start_address, registers)
    return None


class SimBus:
    """The units behind one server, and the request hook that silences units."""

    def __init__(self, units: Sequence[SimUnit]) -> None:
        self.units = {u.unit: u for u in units}
        self.requests_total = 0
        self.on_request: Callable[[int], None] | None = None  # called with each request's unit

    def unit(self, unit_id: int) -> SimUnit:
        return self.units[unit_id]

    def devices(self) -> list[SimDevice]:
        return [u.device() for u in self.units.values()]

    def trace_pdu(self, sending: bool, pdu: Any) -> Any:
        """Count each request; drop it (no answer at all) for a silent or absent unit."""
        if sending:
            return pdu
        self.requests_total += 1
        if self.on_request is not None:
            self.on_request(pdu.dev_id)
        unit = self.units.get(pdu.dev_id)
        if unit is None:
            return None  # like a real RS-485 bus: nobody there, nobody answers
        unit.requests += 1
        if unit.mode == "silent":
            return None
        return pdu


@contextlib.asynccontextmanager
async def serve_tcp(
    units: Sequence[SimUnit], port: int, host: str = "127.0.0.1"
) -> AsyncIterator[SimBus]:
    """Serve ``units`` over Modbus TCP on ``host:port`` while the block runs."""
    bus = SimBus(units)
    server = ModbusTcpServer(bus.devices(), address=(host, port), trace_pdu=bus.trace_pdu)
    async with _serving(server):
        yield bus


@contextlib.asynccontextmanager
async def serve_rtu(
    units: Sequence[SimUnit], tty: str, baudrate: int = 9600
) -> AsyncIterator[SimBus]:
    """Serve ``units`` over Modbus RTU on the serial device ``tty`` (e.g. one end of a pty pair)."""
    bus = SimBus(units)
    server = ModbusSerialServer(
        bus.devices(),
        framer=FramerType.RTU,
        port=tty,
        baudrate=baudrate,
        trace_pdu=bus.trace_pdu,
        reconnect_delay=0,
    )
    async with _serving(server):
        yield bus


@contextlib.asynccontextmanager
async def _serving(server: ModbusTcpServer | ModbusSerialServer) -> AsyncIterator[None]:
    await server.serve_forever(background=True)
    try:
        yield
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------------------------------------
# Standalone process: `python -m gateway.sim modbus ...`


def _unit_arg(text: str) -> tuple[int, str]:
    number, _, profile = text.partition(":")
    if not number.isdigit() or not 0 <= int(number) <= 247 or profile not in _PROFILES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write UNIT:PROFILE with UNIT 0..247 and PROFILE one of "
            f"{', '.join(_PROFILES)}"
        )
    return int(number), profile


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.sim modbus",
        description="Serve simulated Modbus street sensors until SIGTERM.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="serve Modbus TCP here")
    where.add_argument("--rtu", metavar="TTY", help="serve Modbus RTU on this serial device")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument(
        "--unit",
        action="append",
        type=_unit_arg,
        required=True,
        metavar="UNIT:PROFILE",
        help=f"a simulated unit (repeatable); profiles: {', '.join(_PROFILES)}",
    )
    parser.add_argument(
        "--strict", action="store_true", help="unused registers answer illegal data address"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    units = [SimUnit(n, profile, strict=args.strict) for n, profile in args.unit]
    return asyncio.run(_serve_until_signal(args, units))


async def _serve_until_signal(args: argparse.Namespace, units: list[SimUnit]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server: contextlib.AbstractAsyncContextManager[SimBus]
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        server = serve_tcp(units, int(port), host or "127.0.0.1")
        where = f"tcp {args.tcp}"
    else:
        server = serve_rtu(units, args.rtu, args.baudrate)
        where = f"rtu {args.rtu}"
    async with server:
        names = ", ".join(f"{u.unit}:{u.profile}" for u in units)
        print(f"serving {names} on {where}", flush=True)
        await stop.wait()
        # The request counters, for benchmarks that count Modbus requests per poll cycle.
        counts = " ".join(f"{u.unit}:{u.requests}" for u in units)
        print(f"requests {counts}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
