"""`street-gateway probe sdi12`: which addresses answer on an SDI-12 interface, and who they are.

For commissioning at the cabinet: it sends ``a!`` to every address (0-9, a-z, A-Z, or those
given with ``--addresses``) one at a time, since the wildcard ``?!`` makes several sensors
answer at once, and for each one that answers prints its ``aI!`` identification. With
``--measure M`` (or C, M1...) it also takes one measurement from each and prints its values
with their indexes, the ``index`` of a point in the config. Exit 0 when a sensor answered, 1
when none did (or the port cannot be opened).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

from gateway.errors import DeviceError
from gateway.sources.sdi12 import protocol
from gateway.sources.sdi12.port import Sdi12Port, open_port
from gateway.sources.sdi12.protocol import Collected, Refused

EXIT_OK = 0
EXIT_NONE = 1


def register(probes: Any) -> None:
    parser = probes.add_parser(
        "sdi12", help="list the SDI-12 sensors answering on an SDI-12 interface"
    )
    parser.add_argument("--port", required=True, help="the interface's port, e.g. /dev/ttyUSB0")
    parser.add_argument("--baudrate", type=int, default=9600, help="host side (default 9600)")
    parser.add_argument("--parity", choices=["N", "E", "O"], default="N")
    parser.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    parser.add_argument("--bytesize", type=int, choices=[7, 8], default=8)
    parser.add_argument(
        "--command-end", default=r"\r\n", help=r"written after each command (default '\r\n')"
    )
    parser.add_argument("--timeout", type=float, default=0.5, help="seconds per answer (0.5)")
    parser.add_argument(
        "--addresses", default=protocol.ADDRESSES, help="addresses to try (default 0-9a-zA-Z)"
    )
    parser.add_argument(
        "--measure", choices=protocol.MEASURES, default=None, help="also take one measurement"
    )
    parser.add_argument("--crc", action="store_true", help="measure with aMC!/aCC!")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    wrong = sorted(set(args.addresses) - set(protocol.ADDRESSES))
    if wrong:
        print(f"probe sdi12: {''.join(wrong)!r}: addresses are 0-9, a-z, A-Z", file=sys.stderr)
        return 2
    return asyncio.run(_probe(args, sys.stdout))


async def _probe(args: argparse.Namespace, out: TextIO) -> int:
    try:
        port = await open_port(
            args.port,
            baudrate=args.baudrate,
            parity=args.parity,
            stopbits=args.stopbits,
            bytesize=args.bytesize,
            open_timeout=max(args.timeout, 1.0),
        )
    except DeviceError as exc:
        print(f"probe sdi12: {exc}", file=sys.stderr)
        return EXIT_NONE
    asker = _Asker(port, args.command_end.encode().decode("unicode_escape"), args.timeout)
    print(f"# {args.port} {args.baudrate} baud: a! to {len(args.addresses)} address(es)", file=out)
    found = 0
    try:
        for address in dict.fromkeys(args.addresses):
            if await asker.ask(protocol.acknowledge(address)) is None:
                continue
            found += 1
            answer = await asker.ask(protocol.identify(address))
            who = protocol.parse_identification(answer, address) if answer else "no answer to aI!"
            print(f"{address}: {who}", file=out, flush=True)
            if args.measure:
                print(f"   {await _measure(asker, address, args.measure, args.crc)}", file=out)
    except DeviceError as exc:
        print(f"probe sdi12: {exc}", file=sys.stderr)
    finally:
        await port.aclose()
    print(f"# {found} sensor(s) answered", file=out)
    return EXIT_OK if found else EXIT_NONE


async def _measure(asker: _Asker, address: str, measure: str, crc: bool) -> str:
    command = protocol.start(address, measure, crc)
    answer = await asker.ask(command)
    if answer is None:
        return f"{command}: no answer"
    announced = protocol.parse_announced(answer, address, measure)
    if isinstance(announced, Refused):
        return f"{command}: {announced}"
    if announced.seconds:
        if protocol.concurrent(measure):
            await asyncio.sleep(announced.seconds)
        else:  # the service request, or the announced time
            await asker.wait_for(address, announced.seconds + asker.timeout)
    collected = Collected(announced)
    while not collected.complete:
        data = protocol.send_data(address, collected.next_index)
        answer = await asker.ask(data)
        if answer is None:
            return f"{data}: no answer"
        values = protocol.parse_data(answer, address, crc=crc, measure=measure)
        outcome = values if isinstance(values, Refused) else collected.add(values)
        if outcome is not None:
            return f"{data}: {outcome}"
    shown = ", ".join(f"[{k}] {v:g}" for k, v in enumerate(collected.values))
    return f"{command} -> {announced.count} values in {announced.seconds}s: {shown}"


class _Asker:
    """One command at a time: the first line from the command's address, or None in time."""

    def __init__(self, port: Sdi12Port, end: str, timeout: float) -> None:
        self.port = port
        self.end = end
        self.timeout = timeout

    async def ask(self, command: str) -> str | None:
        self.port.drain()
        self.port.take_unfinished()
        self.port.write(command + self.end)
        return await self.wait_for(command[0], self.timeout)

    async def wait_for(self, address: str, seconds: float) -> str | None:
        try:
            async with asyncio.timeout(seconds):
                while True:
                    answer = protocol.decode(await self.port.get())
                    if (
                        isinstance(answer, str)
                        and protocol.address_of(answer) == address
                        and not answer.endswith("!")  # the adapter's echo is no answer
                    ):
                        return answer
        except TimeoutError:
            return None
