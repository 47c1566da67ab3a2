"""`street-gateway probe serial`: show what a serial sensor says, and what the parser makes of it.

For commissioning at the cabinet: it prints every line as received (``repr``, so a wrong line
end or stray characters show), and with ``-c CONFIG --source NAME`` the values the configured
parser extracts, or why it rejects the line. Stops after ``--count`` lines or ``--seconds``.
Exit 0 when at least one line arrived, 1 when none did (or the port cannot be opened).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

from gateway.codec.lines import FrameError, make_parser, unescape
from gateway.console import add_config_argument, load_or_report
from gateway.errors import DeviceError, ParseError
from gateway.sources.registry import installed
from gateway.sources.serial.config import SerialSource
from gateway.sources.serial.source import Line, LinePort, open_line_port

EXIT_OK = 0
EXIT_NO_LINE = 1
EXIT_USAGE = 2

Parser = Callable[[str], dict[str, float]]
T = TypeVar("T")


@dataclass(frozen=True)
class _Settings:
    port: str
    baudrate: int
    parity: str
    stopbits: int
    bytesize: int
    line_end: bytes
    request: bytes | None
    timeout: float
    interval: float
    count: int | None
    seconds: float


def register(probes: Any) -> None:
    serial = probes.add_parser("serial", help="print and parse lines from a serial sensor")
    add_arguments(serial)
    serial.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", help="serial device, e.g. /dev/ttyUSB0 (default: the source's)")
    parser.add_argument("--baudrate", type=int, default=None, help="default 9600 or the source's")
    parser.add_argument("--parity", choices=["N", "E", "O"], default=None)
    parser.add_argument("--stopbits", type=int, choices=[1, 2], default=None)
    parser.add_argument("--bytesize", type=int, choices=[7, 8], default=None)
    parser.add_argument("--line-end", default=None, help=r"e.g. '\r\n' (default '\n')")
    parser.add_argument(
        "--request", default=None, help=r"poll mode: sent each time, e.g. 'MEAS?\r\n'"
    )
    parser.add_argument("--timeout", type=float, default=None, help="poll mode: answer timeout, s")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="poll mode: seconds per request"
    )
    add_config_argument(parser)
    parser.add_argument(
        "--source", default=None, help="a serial source of the config to parse with"
    )
    parser.add_argument("--count", type=int, default=None, help="stop after N lines")
    parser.add_argument("--seconds", type=float, default=10.0, help="stop after S seconds (10)")


def run(args: argparse.Namespace) -> int:
    source: SerialSource | None = None
    if args.source is not None:
        loaded = load_or_report(args.config, installed())
        if loaded is None:
            return EXIT_USAGE
        found = [s for s in loaded.config.sources if s.name == args.source]
        if not found or not isinstance(found[0], SerialSource):
            serial = [s.name for s in loaded.config.sources if isinstance(s, SerialSource)]
            print(
                f"probe serial: no serial source {args.source!r} in {loaded.path} "
                f"(serial sources: {', '.join(serial) or 'none'})",
                file=sys.stderr,
            )
            return EXIT_USAGE
        source = found[0]
    if args.port is None and source is None:
        print("probe serial: give --port, or -c CONFIG --source NAME", file=sys.stderr)
        return EXIT_USAGE
    settings = _settings(args, source)
    parser = make_parser(source.parse, source.points) if source is not None else None
    units = {p.name: p.unit for p in source.points} if source is not None else {}
    return asyncio.run(_probe(settings, parser, units, sys.stdout))


def _settings(args: argparse.Namespace, source: SerialSource | None) -> _Settings:
    """What was given on the command line, else the source's settings, else the defaults."""
    line_end = unescape(args.line_end) if args.line_end is not None else None
    request = unescape(args.request) if args.request is not None else None
    if source is None:
        return _Settings(
            port=args.port,
            baudrate=_first(args.baudrate, 9600),
            parity=_first(args.parity, "N"),
            stopbits=_first(args.stopbits, 1),
            bytesize=_first(args.bytesize, 8),
            line_end=_first(line_end, b"\n"),
            request=request,
            timeout=_first(args.timeout, 1.0),
            interval=args.interval,
            count=args.count,
            seconds=args.seconds,
        )
    return _Settings(
        port=_first(args.port, source.port),
        baudrate=_first(args.baudrate, source.baudrate),
        parity=_first(args.parity, source.parity),
        stopbits=_first(args.stopbits, source.stopbits),
        bytesize=_first(args.bytesize, source.bytesize),
        line_end=_first(line_end, source.line_end.encode()),
        request=request if request is not None else _encoded(source.request),
        timeout=_first(args.timeout, source.timeout),
        interval=args.interval,
        count=args.count,
        seconds=args.seconds,
    )


def _first(given: T | None, otherwise: T) -> T:
    return otherwise if given is None else given


def _encoded(text: str | None) -> bytes | None:
    return text.encode() if text else None


async def _probe(
    settings: _Settings, parser: Parser | None, units: dict[str, str | None], out: TextIO
) -> int:
    try:
        port = await open_line_port(
            settings.port,
            line_end=settings.line_end,
            baudrate=settings.baudrate,
            parity=settings.parity,
            stopbits=settings.stopbits,
            bytesize=settings.bytesize,
            open_timeout=max(settings.timeout, 1.0),
        )
    except DeviceError as exc:
        print(f"probe serial: {exc}", file=sys.stderr)
        return EXIT_NO_LINE
    mode = f"poll with {settings.request!r}" if settings.request else "stream"
    print(
        f"# {settings.port} {settings.baudrate} {settings.bytesize}{settings.parity}"
        f"{settings.stopbits}, line end {settings.line_end!r}, {mode}",
        file=out,
        flush=True,
    )
    tally = _Tally(parser, units, out)
    started = time.monotonic()
    try:
        async with asyncio.timeout(settings.seconds):
            if settings.request is None:
                while not tally.enough(settings.count):
                    tally.show(await port.get())
            else:
                await _poll(port, settings, tally)
    except TimeoutError:
        pass
    except DeviceError as exc:
        print(f"probe serial: {exc}", file=sys.stderr)
    finally:
        await port.aclose()
    print(
        f"# {tally.lines} lines in {time.monotonic() - started:.1f}s"
        + (f": {tally.parsed} parsed, {tally.errors} rejected" if parser else ""),
        file=out,
        flush=True,
    )
    return EXIT_OK if tally.lines else EXIT_NO_LINE


async def _poll(port: LinePort, settings: _Settings, tally: _Tally) -> None:
    assert settings.request is not None
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while not tally.enough(settings.count):
        port.discard_pending()
        port.write(settings.request)
        try:
            async with asyncio.timeout(settings.timeout):
                tally.show(await port.get())
        except TimeoutError:
            print(f"  (no answer within {settings.timeout:g}s)", file=tally.out, flush=True)
        next_at += settings.interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))


class _Tally:
    """Prints each line and what the parser makes of it; counts them."""

    def __init__(self, parser: Parser | None, units: dict[str, str | None], out: TextIO) -> None:
        self.parser = parser
        self.units = units
        self.out = out
        self.lines = self.parsed = self.errors = 0

    def enough(self, count: int | None) -> bool:
        return count is not None and self.lines >= count

    def show(self, line: Line) -> None:
        self.lines += 1
        stamp = time.strftime("%H:%M:%S", time.localtime(line.ts_ms / 1000))
        stamp += f".{line.ts_ms % 1000:03d}"
        if isinstance(line.text, FrameError):
            self.errors += 1
            print(f"{stamp} ! {line.text}", file=self.out, flush=True)
            return
        print(f"{stamp} {line.text!r}", file=self.out, flush=True)
        if self.parser is None:
            return
        try:
            values = self.parser(line.text)
        except ParseError as exc:
            self.errors += 1
            print(f"    -> parse error: {exc}", file=self.out, flush=True)
            return
        self.parsed += 1
        shown = ", ".join(
            f"{name}={value:g}" + (f" {self.units[name]}" if self.units.get(name) else "")
            for name, value in values.items()
        )
        print(f"    -> {shown}", file=self.out, flush=True)
