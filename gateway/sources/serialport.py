"""Opening a serial port for a source kind (serial, sdi12, particulate, a plugin's): bounded in
time, with pyserial's errors as one line a technician understands.

A USB serial driver can hang in ``open()``, so the port is opened in a thread under a timeout;
if it opens after the timeout after all, it is closed then. What arrives is handed to the
kind's own ``asyncio.Protocol`` (a line framer, an SDI-12 answer reader, a frame decoder).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from functools import partial
from typing import TypeVar, cast

import serial
import serial_asyncio_fast

from gateway.errors import DeviceError, DeviceTimeout

P = TypeVar("P", bound=asyncio.Protocol)


async def open_serial_port(
    port: str,
    protocol: Callable[[], P],
    *,
    baudrate: int = 9600,
    parity: str = "N",
    stopbits: int = 1,
    bytesize: int = 8,
    open_timeout: float = 1.0,
) -> tuple[asyncio.Transport, P]:
    """Open ``port`` and connect ``protocol`` to it; DeviceTimeout when the driver does not
    answer within ``open_timeout``, DeviceError when the port cannot be opened."""
    loop = asyncio.get_running_loop()
    opening = loop.run_in_executor(
        None,
        partial(
            serial.serial_for_url,
            port,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            bytesize=bytesize,
        ),
    )
    try:
        async with asyncio.timeout(open_timeout):
            instance = await asyncio.shield(opening)
    except TimeoutError:  # before OSError, its base class
        opening.add_done_callback(_close_late)  # if it opens after all, close it
        raise DeviceTimeout(f"cannot open {port}: no answer from the driver") from None
    except asyncio.CancelledError:
        opening.add_done_callback(_close_late)
        raise
    except (serial.SerialException, OSError, ValueError) as exc:
        raise DeviceError(f"cannot open {port}: {reason(exc)}") from exc
    made = protocol()
    transport, _ = await serial_asyncio_fast.connection_for_serial(loop, lambda: made, instance)
    return cast(asyncio.Transport, transport), made  # a SerialTransport is one


def _close_late(opening: asyncio.Future[serial.Serial]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def reason(exc: BaseException) -> str:
    """pyserial wraps OSError text in its own (``[Errno 2] could not open port ...``): unwrap."""
    if exc.args and isinstance(exc.args[0], int) and exc.args[0] > 0:
        return os.strerror(exc.args[0])
    return str(exc) or type(exc).__name__
