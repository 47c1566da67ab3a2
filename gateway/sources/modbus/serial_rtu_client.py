"""Modbus RTU on a serial port (RS-485) through pymodbus's client, as a transport.

Imported only where an RTU bus is polled: pymodbus costs ~2 MB resident. pymodbus neither
retries nor reconnects here (``retries=0``, ``reconnect_delay=0``): the source retries itself,
so a down device can be tried once per backoff period, and reconnects with its own backoff.
After each transaction the bus stays quiet for ``frame_gap_s`` (RTU's silent interval).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import (
    ConnectionException,
    MessageRegisterException,
    ModbusException,
    ModbusIOException,
    NoSuchIdException,
    NotImplementedException,
    ParameterException,
)
from pymodbus.framer import FramerType

from gateway.codec import mbap
from gateway.sources.modbus.transport import CONNECTION, PROTOCOL, TIMEOUT, ErrorMap


class SerialRtuClient:
    # Everything read() raises but an ExceptionAnswer, mapped (tests/test_transports.py):
    # pymodbus's whole exception tree, a guard timeout, the serial port's OSError.
    errors: ClassVar[ErrorMap] = {
        TimeoutError: TIMEOUT,
        ModbusIOException: TIMEOUT,  # pymodbus: no (whole) answer within the timeout
        ConnectionException: CONNECTION,
        ConnectionError: CONNECTION,
        OSError: (CONNECTION[0], "serial port: {exc}"),
        ModbusException: PROTOCOL,
        ParameterException: PROTOCOL,
        NoSuchIdException: PROTOCOL,
        NotImplementedException: PROTOCOL,
        MessageRegisterException: PROTOCOL,
        mbap.FramingError: PROTOCOL,  # an answer with fewer registers than asked
    }

    def __init__(
        self,
        port: str,
        baudrate: int,
        parity: str,
        stopbits: int,
        bytesize: int,
        *,
        timeout_s: float,
        frame_gap_s: float = 0.0,
    ) -> None:
        self.timeout_s = timeout_s
        self.frame_gap_s = frame_gap_s
        self._client = AsyncModbusSerialClient(
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

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def connect(self) -> bool:
        return bool(await self._client.connect())

    def close(self) -> None:
        self._client.close()

    async def read(self, table: str, address: int, count: int, unit: int) -> list[int] | list[bool]:
        timeout = self.timeout_s
        try:
            # pymodbus times the answer out itself; this guard only bounds the worst case
            async with asyncio.timeout(timeout + max(0.1, timeout / 2)):
                response = await _read_table(self._client, table, address, count, unit)
        finally:
            if self.frame_gap_s:
                await asyncio.sleep(self.frame_gap_s)
        if response.isError():
            raise mbap.ExceptionAnswer(int(getattr(response, "exception_code", 0)))
        if table in ("coil", "discrete"):
            return list(response.bits[:count])
        if len(response.registers) != count:
            raise mbap.FramingError(f"asked {count} registers, got {len(response.registers)}")
        return list(response.registers)

    async def write(self, function: int, address: int, words: Sequence[int], unit: int) -> None:
        """One write (pymodbus retries nothing here: ``retries=0``)."""
        timeout = self.timeout_s
        client = self._client
        try:
            async with asyncio.timeout(timeout + max(0.1, timeout / 2)):
                if function == 5:
                    response = await client.write_coil(address, bool(words[0]), device_id=unit)
                elif function == 6:
                    response = await client.write_register(address, words[0], device_id=unit)
                else:
                    response = await client.write_registers(address, list(words), device_id=unit)
        finally:
            if self.frame_gap_s:
                await asyncio.sleep(self.frame_gap_s)
        if response.isError():
            raise mbap.ExceptionAnswer(int(getattr(response, "exception_code", 0)))


async def _read_table(
    client: AsyncModbusSerialClient, table: str, address: int, count: int, unit: int
) -> Any:
    read = {
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
    }[table]
    return await read(address, count=count, device_id=unit)
