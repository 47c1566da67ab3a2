"""`street-gateway probe modbus`: scan a bus for unit ids; read raw registers, decoded every way.

    street-gateway probe modbus --port /dev/ttyUSB0 --baudrate 9600 --scan 1-247
    street-gateway probe modbus --host 10.0.0.5 --unit 3 --read holding:0:10

A unit "answers" when it sends anything back, an exception response included (it is there,
it just does not have that register). Exit 0 when something answered, 1 when nothing did.
Every bus is read through the daemon's own transports (``sources/modbus.make_transport``: Modbus
TCP, ``--framing rtu`` over TCP, RS-485), so the probe sees a device as the daemon will.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any, NamedTuple

from gateway.codec import mbap
from gateway.codec.registers import MAX_BITS, MAX_REGISTERS, TABLE_ORDER, DecodeError, decode
from gateway.errors import DeviceError
from gateway.sources.modbus.config import ModbusRtuSource, ModbusTcpSource
from gateway.sources.modbus.points import ModbusPoint
from gateway.sources.modbus.source import make_transport
from gateway.sources.modbus.transport import Transport, map_errors

EXIT_OK = 0
EXIT_NO_ANSWER = 1
EXIT_USAGE = 2
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def register(probes: Any) -> None:
    parser = probes.add_parser(
        "modbus",
        help="scan unit ids, read and decode raw registers",
        description="Scan a Modbus bus for units that answer, or read raw registers of one "
        "unit and show them decoded as each type and byte order.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the RS-485 bus (Modbus RTU)")
    where.add_argument("--host", help="Modbus TCP host")
    parser.add_argument("--tcp-port", type=int, default=502, help="Modbus TCP port (502)")
    parser.add_argument(
        "--framing",
        choices=["mbap", "rtu"],
        default="mbap",
        help="with --host: rtu for a serial-to-Ethernet converter passing RTU frames (mbap)",
    )
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--parity", choices=["N", "E", "O"], default="N")
    parser.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    parser.add_argument("--bytesize", type=int, choices=[7, 8], default=8)
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per request (0.2 scanning, else 1)"
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--scan", metavar="FROM-TO", help="unit ids to try, e.g. 1-247")
    what.add_argument("--read", metavar="TABLE:ADDRESS:COUNT", help="e.g. holding:0:10")
    parser.add_argument("--unit", type=int, default=1, help="unit id for --read (default 1)")
    parser.add_argument(
        "--scan-register",
        metavar="TABLE:ADDRESS",
        default="holding:0",
        help="what --scan reads from each unit (default holding:0)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # pymodbus logs every unanswered request with a frame dump; a scan expects silence
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        if args.scan:
            first, last = _unit_range(args.scan)
            table, address, _ = _table_spec(args.scan_register + ":1")
            return asyncio.run(_scan(args, range(first, last + 1), table, address))
        table, address, count = _table_spec(args.read)
    except ValueError as exc:
        print(f"street-gateway probe modbus: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_read(args, table, address, count))


def _unit_range(text: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    try:
        lo, hi = int(first), int(last if sep else first)
    except ValueError:
        raise ValueError(f"--scan {text!r}: write FROM-TO, like 1-247") from None
    if not 0 <= lo <= hi <= 247:
        raise ValueError(f"--scan {text!r}: unit ids go from 0 to 247")
    return lo, hi


def _table_spec(text: str) -> tuple[str, int, int]:
    parts = text.split(":")
    if len(parts) != 3 or parts[0] not in TABLE_ORDER:
        raise ValueError(f"{text!r}: write TABLE:ADDRESS:COUNT with TABLE one of {TABLE_ORDER}")
    try:
        address, count = int(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError(f"{text!r}: ADDRESS and COUNT are numbers") from None
    limit = MAX_BITS if parts[0] in ("coil", "discrete") else MAX_REGISTERS
    if not (0 <= address <= 65535 and 1 <= count <= limit and address + count <= 65536):
        raise ValueError(f"{text!r}: address 0-65535, count 1-{limit}")
    return parts[0], address, count


class Answer(NamedTuple):
    values: list[Any]  # registers or bits; empty for an exception response
    exception_code: int | None = None


def _client(args: argparse.Namespace, timeout: float) -> Transport:
    """The transport the daemon would use for the same settings."""
    # a source's config needs a device; the transport never looks at it
    device = {"name": "probe", "unit": 1, "points": [_POINT]}
    common: dict[str, Any] = {"name": "probe", "timeout": f"{timeout}s", "devices": [device]}
    if args.port:
        line = {"baudrate": args.baudrate, "parity": args.parity, "stopbits": args.stopbits,
                "bytesize": args.bytesize}  # fmt: skip
        rtu = {**common, **line, "kind": "modbus-rtu", "port": args.port}
        # a quiet line between frames
        return make_transport(ModbusRtuSource.model_validate(rtu), frame_gap_s=0.005)
    tcp = {**common, "kind": "modbus-tcp", "host": args.host, "port": args.tcp_port,
           "framing": args.framing}  # fmt: skip
    return make_transport(ModbusTcpSource.model_validate(tcp))


_POINT = {"name": "p", "table": "holding", "address": 0, "type": "uint16"}


async def _request(
    client: Transport, table: str, address: int, count: int, *, unit: int, timeout_s: float
) -> Answer | None:
    """What the unit answered (maybe an exception code), or None when nothing usable came."""
    try:
        with map_errors(client.errors, timeout_s):
            return Answer(list(await client.read(table, address, count, unit)))
    except mbap.ExceptionAnswer as exc:
        return Answer([], exc.code)
    except DeviceError:
        if not client.connected:  # a broken frame closed the link: the next unit gets a new one
            await client.connect()
        return None


async def _connect(args: argparse.Namespace, wait_s: float) -> Transport | None:
    client = _client(args, wait_s)
    try:
        async with asyncio.timeout(wait_s + 2.0):
            ok = await client.connect()
    except TimeoutError:
        ok = False
    if not ok:
        where = args.port or f"{args.host}:{args.tcp_port}"
        print(f"cannot open {where}", file=sys.stderr)
        client.close()
        return None
    return client


async def _scan(args: argparse.Namespace, units: range, table: str, address: int) -> int:
    timeout = args.timeout if args.timeout is not None else 0.2
    client = await _connect(args, timeout)
    if client is None:
        return EXIT_NO_ANSWER
    found: list[int] = []
    try:
        print(f"scanning units {units.start}-{units.stop - 1} ({table} {address}, {timeout:g}s)")
        for unit in units:
            answer = await _request(client, table, address, 1, unit=unit, timeout_s=timeout)
            if answer is None:
                continue
            found.append(unit)
            if answer.exception_code is not None:
                print(f"unit {unit:3d}: answers (exception code {answer.exception_code})")
            elif table in ("coil", "discrete"):
                print(f"unit {unit:3d}: answers ({table} {address} = {int(answer.values[0])})")
            else:
                word = answer.values[0]
                print(f"unit {unit:3d}: answers ({table} {address} = 0x{word:04X} = {word})")
    finally:
        client.close()
    if not found:
        print("no unit answered", file=sys.stderr)
        return EXIT_NO_ANSWER
    print(f"{len(found)} unit(s) answered: {', '.join(map(str, found))}")
    return EXIT_OK


async def _read(args: argparse.Namespace, table: str, address: int, count: int) -> int:
    timeout = args.timeout if args.timeout is not None else 1.0
    client = await _connect(args, timeout)
    if client is None:
        return EXIT_NO_ANSWER
    try:
        answer = await _request(client, table, address, count, unit=args.unit, timeout_s=timeout)
    finally:
        client.close()
    if answer is None:
        print(f"unit {args.unit}: no answer within {timeout:g}s", file=sys.stderr)
        return EXIT_NO_ANSWER
    if answer.exception_code is not None:
        print(f"unit {args.unit}: exception code {answer.exception_code}")
        return EXIT_OK
    print(f"unit {args.unit} {table} {address}..{address + count - 1}")
    if table in ("coil", "discrete"):
        for i, bit in enumerate(answer.values):
            print(f"{address + i:6d}  {int(bit)}")
    else:
        print("\n".join(format_registers(address, answer.values)))
    return EXIT_OK


def format_registers(address: int, words: list[int]) -> list[str]:
    """Raw words beside every plausible decoding, one row per start address."""
    lines = [
        f"{'addr':>6}  {'hex':>6}  {'ascii':>5}  {'uint16':>6}  {'int16':>6}  "
        + "  ".join(f"{'int32 ' + o:>12} {'uint32 ' + o:>12} {'float32 ' + o:>14}" for o in ORDERS)
    ]
    for i, word in enumerate(words):
        row = (
            f"{address + i:6d}  0x{word:04X}  {_ascii(word):>5}  {word:6d}  "
            f"{_one('int16', [word]):>6}"
        )
        pair = words[i : i + 2]
        for order in ORDERS:
            if len(pair) < 2:
                break
            row += (
                f"  {_one('int32', pair, order):>12} {_one('uint32', pair, order):>12}"
                f" {_one('float32', pair, order):>14}"
            )
        lines.append(row)
    return lines


def _ascii(word: int) -> str:
    """The register's two bytes as a ``type: string`` point reads them; a space or a byte that
    is not printable shows as ``.``, so the column stays one word."""
    return "".join(chr(b) if 0x20 < b < 0x7F else "." for b in word.to_bytes(2, "big"))


def _one(type_: str, words: list[int], order: str = "ABCD") -> str:
    point = ModbusPoint(name="probe", table="holding", address=0, type=type_, byte_order=order)  # type: ignore[arg-type]
    try:
        value = decode(point, words)
    except DecodeError:
        return "nan/inf"
    return f"{value:.6g}" if isinstance(value, float) else str(value)
