"""A real pymodbus TCP server whose registers keep what is written, and which records every
write it is sent: the peer of the write tests. Its modes are what a field device does:
``ok``, ``silent`` (drops every request: the client times out), ``exception`` (answers a write
with an exception code), ``ignore`` (acknowledges a write and keeps the old value, so the
read-back differs)."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

SIZE = 64  # registers (and coils) from address 0
WRITES = {5: "coil", 6: "holding", 15: "coil", 16: "holding"}


@dataclass
class RecordingUnit:
    unit: int
    mode: Literal["ok", "silent", "exception", "ignore"] = "ok"
    exception_code: int = 2
    holding: list[int] = field(default_factory=lambda: [0] * SIZE)
    coils: list[bool] = field(default_factory=lambda: [False] * SIZE)
    # (function, address, values) of every write that reached the unit, answered or not
    writes: list[tuple[int, int, list[int]]] = field(default_factory=list)
    reads: int = 0
    # (monotonic time, function) of the last reads served, for the benchmark's latencies
    read_log: list[tuple[float, int]] = field(default_factory=list)


async def _access(  # noqa: PLR0917 - the signature pymodbus calls
    unit: RecordingUnit,
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    if set_values is not None:
        unit.writes.append((function_code, address, [int(v) for v in set_values]))
        if unit.mode == "exception":
            return ExcCodes(unit.exception_code)
        if unit.mode == "ok":
            if WRITES[function_code] == "coil":
                for k, v in enumerate(set_values):
                    unit.coils[address + k] = bool(v)
            else:
                unit.holding[address : address + len(set_values)] = [int(v) for v in set_values]
        return None
    unit.reads += 1
    if len(unit.read_log) < 100_000:
        unit.read_log.append((time.monotonic(), function_code))
    # every read is served from the unit's own model, which only a kept write changes
    if function_code == 1:  # bits are packed 16 to a word of the block
        for word in range(address // 16, (address + count - 1) // 16 + 1):
            bits = unit.coils[16 * word : 16 * word + 16]
            registers[word - start_address] = sum(1 << b for b, on in enumerate(bits) if on)
    elif function_code == 3:
        for k in range(address, address + count):
            registers[k - start_address] = unit.holding[k]
    return None


class RecordingBus:
    def __init__(self, units: list[RecordingUnit]) -> None:
        self.units = {u.unit: u for u in units}

    def trace_pdu(self, sending: bool, pdu: Any) -> Any:
        if sending:
            return pdu
        unit = self.units.get(pdu.dev_id)
        if unit is None or unit.mode == "silent":
            if unit is not None and pdu.function_code in WRITES:
                unit.writes.append((pdu.function_code, pdu.address, []))
            return None
        return pdu


def _device(unit: RecordingUnit) -> SimDevice:
    blocks = (
        [SimData(address=0, values=[False] * SIZE, datatype=DataType.BITS)],
        [SimData(address=0, values=[False] * 16, datatype=DataType.BITS)],
        [SimData(address=0, values=[0] * SIZE, datatype=DataType.REGISTERS)],
        [SimData(address=0, values=[0] * SIZE, datatype=DataType.REGISTERS)],
    )
    return SimDevice(id=unit.unit, simdata=blocks, action=functools.partial(_access, unit))


@contextlib.asynccontextmanager
async def recording_server(
    units: list[RecordingUnit], port: int, framer: FramerType = FramerType.SOCKET
) -> AsyncIterator[RecordingBus]:
    """Serve ``units`` on loopback ``port``: Modbus TCP, or RTU frames over TCP."""
    bus = RecordingBus(units)
    server = ModbusTcpServer(
        [_device(u) for u in units],
        address=("127.0.0.1", port),
        framer=framer,
        trace_pdu=bus.trace_pdu,
    )
    await server.serve_forever(background=True)
    try:
        yield bus
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
