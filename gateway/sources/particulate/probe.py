"""`street-gateway probe particulate`: show the frames a dust sensor sends, decoded.

For commissioning at the cabinet: it wakes the sensor and sets it reporting on its own (it is
left running: the gateway puts a duty-cycled sensor back to sleep), then prints every frame as
it arrives, decoded, with its bytes, and at the end how many frames, bad checksums and skipped
bytes it saw. Stops after ``--seconds`` (default 5) or ``--count`` readings. Exit 0 when at
least one valid reading arrived, 1 when none did (or the port cannot be opened).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, TextIO

from gateway.errors import DeviceError
from gateway.sources.particulate.config import UNIT
from gateway.sources.particulate.frames import (
    MODELS,
    Event,
    Model,
    Reading,
    active_mode_command,
    wake_command,
)
from gateway.sources.particulate.port import open_sensor_port

EXIT_OK = 0
EXIT_NO_FRAME = 1


def register(probes: Any) -> None:
    parser = probes.add_parser("particulate", help="print the frames of an SDS011 or PMS5003")
    parser.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB0")
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--seconds", type=float, default=5.0, help="stop after S seconds (5)")
    parser.add_argument("--count", type=int, default=None, help="stop after N readings")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(
        probe(args.port, args.model, args.baudrate, seconds=args.seconds, count=args.count)
    )


async def probe(
    path: str,
    model: Model,
    baudrate: int = 9600,
    *,
    seconds: float = 5.0,
    count: int | None = None,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    readings = 0
    enough = asyncio.Event()

    def show(event: Event, ts_ms: int) -> None:
        nonlocal readings
        clock = time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000)) + f".{ts_ms % 1000:03d}"
        if isinstance(event, Reading):
            readings += 1
            values = " ".join(f"{k}={v:g}" for k, v in event.values().items())
            what = f"{values} {UNIT}"
        else:
            what = f"reply to command 0x{event.command:02x}"
        print(f"{clock}  {what}  [{event.raw.hex(' ')}]", file=out, flush=True)
        if count is not None and readings >= count:
            enough.set()

    try:
        port = await open_sensor_port(path, model, baudrate=baudrate, listener=show)
    except DeviceError as exc:
        print(f"probe particulate: {exc}", file=sys.stderr)
        return EXIT_NO_FRAME
    print(f"{model} on {path}, {baudrate} baud: waking it, reading for {seconds:g}s", file=out)
    try:
        port.write(wake_command(model) + active_mode_command(model))
        try:
            async with asyncio.timeout(seconds):
                await enough.wait()
        except TimeoutError:
            pass
    except DeviceError as exc:
        print(f"probe particulate: {exc}", file=sys.stderr)
    finally:
        await port.aclose()
    decoder = port.decoder
    print(
        f"{readings} readings, {decoder.bad_checksums} bad checksums, "
        f"{decoder.skipped_bytes} bytes skipped",
        file=out,
    )
    return EXIT_OK if readings else EXIT_NO_FRAME
