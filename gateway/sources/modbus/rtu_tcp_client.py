"""Modbus RTU frames over a TCP socket (``framing: rtu``), for serial-to-Ethernet converters
that pass the RS-485 bytes through unchanged: CRC, no MBAP header, one transaction at a time.

RTU has no transaction id, so a late answer cannot be told from the next one, and nothing
marks where a frame starts. So the link is re-synchronised by starting over on a fresh
connection whenever it may hold stray bytes: after a timeout, after a CRC error, after bytes
that are not the answer asked for, and after bytes that arrive when nothing was asked. CRC
errors and garbage are counted here (``crc_errors``, ``garbage``; the source's ``link`` in
/status) and fail the read as a protocol error; the source reconnects on the next read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from gateway.codec import mbap, rtu
from gateway.sources.modbus.mbap_client import LinkBase, TcpClient
from gateway.sources.modbus.transport import CONNECTION, PROTOCOL, TIMEOUT, ErrorMap

WRITE = "write"  # in the awaited key's table place: the answer to a write


class RtuTcpClient(TcpClient["_RtuLink"]):
    # Everything read() raises but an ExceptionAnswer, mapped (tests/test_transports.py).
    errors: ClassVar[ErrorMap] = {
        TimeoutError: TIMEOUT,
        ConnectionError: CONNECTION,
        OSError: CONNECTION,
        mbap.FramingError: PROTOCOL,
        rtu.CrcError: PROTOCOL,
    }

    def __init__(self, host: str, port: int, *, timeout_s: float) -> None:
        super().__init__(host, port, timeout_s=timeout_s)
        self.crc_errors = 0
        self.garbage = 0  # answers that were not the answer asked for, and stray bytes

    @property
    def link_counters(self) -> dict[str, int]:
        """Shown per source in /status (``link``) and /metrics (source_link_errors_total)."""
        return {"crc_errors": self.crc_errors, "garbage": self.garbage}

    def _new_link(self) -> _RtuLink:
        return _RtuLink(self)

    async def read(self, table: str, address: int, count: int, unit: int) -> list[int] | list[bool]:
        """Registers or bits; raises TimeoutError, ConnectionError, mbap.ExceptionAnswer,
        rtu.CrcError or mbap.FramingError (the link is then closed)."""
        link = self._open_link()
        try:
            pdu = await link.ask(
                (unit, table, count), rtu.read_request(unit, table, address, count), self.timeout_s
            )
        except (TimeoutError, mbap.FramingError):
            self.close()  # a late or broken answer must not be read as the next one
            raise
        return mbap.pdu_values(pdu, table, count)

    async def write(self, function: int, address: int, words: Sequence[int], unit: int) -> None:
        """One write; raises as ``read`` does."""
        link = self._open_link()
        request = rtu.write_request(unit, function, address, words)
        try:
            pdu = await link.ask((unit, WRITE, function), request, self.timeout_s)
        except (TimeoutError, mbap.FramingError):
            self.close()
            raise
        mbap.check_write_answer(pdu, function, address, words)


class _RtuLink(LinkBase[tuple[int, str, int], bytes]):
    """Hands back the PDU of the answer to (unit, table, count); any stray byte is garbage."""

    def __init__(self, client: RtuTcpClient) -> None:
        super().__init__()
        self._client = client

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        awaited = self._awaited
        if awaited is None or awaited[1].done():  # nothing asked: stray bytes
            self._client.garbage += 1
            self._fail(mbap.FramingError(f"{len(data)} bytes when nothing was asked"))
            self.close()
            return
        (unit, table, count), answer = awaited
        try:
            if table == WRITE:  # count is then the write's function
                pdu, used = rtu.next_write_answer(self._buffer, unit, count)
            else:
                pdu, used = rtu.next_answer(self._buffer, unit, table, count)
        except mbap.FramingError as exc:
            if isinstance(exc, rtu.CrcError):
                self._client.crc_errors += 1
            else:
                self._client.garbage += 1
            self._fail(exc)
            return
        if pdu is None:
            return
        if used < len(self._buffer):  # more than the answer: the stream is out of step
            self._client.garbage += 1
            self._fail(mbap.FramingError(f"{len(self._buffer) - used} bytes after the answer"))
            return
        self._buffer.clear()
        answer.set_result(pdu)
