"""Simulated serial ASCII sensors on a pseudo-terminal, for the demo, tests and benchmarks.

:class:`SimulatedSerialSensor` owns the master side of a pty in a thread of its own and exposes
the slave side at :attr:`~SimulatedSerialSensor.path` (a stable symlink when ``link`` is given),
which a serial source opens like ``/dev/ttyUSB0``:

* ``mode="stream"``: a sound-level meter that talks on its own, one line every ``period``
  (``LAeq=54.2 LAmax=61.0``);
* ``mode="poll"``: a sensor that answers each ``request`` (``MEAS?\\r\\n``) with one line,
  as ``kv`` (``pm25=12.3 pm10=20.1 temp=-3.5``), ``csv`` or ``json``.

Faults on demand: every Nth line replaced by garbage, an over-long line or invalid UTF-8;
:attr:`silent` (or ``silence_every``/``silence_for``) to stop talking; :meth:`unplug` and
:meth:`plug` to make the port vanish and come back on a new pty, as a USB adapter does.

The sensor writes without blocking and drops what the pty cannot take, like a UART nobody
listens to: a blocking write would deadlock once the pty buffer is full.

As a process: ``python -m gateway.sim serial --link /tmp/x/noise --mode stream --period 0.5``
serves until SIGTERM and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import queue
import random
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from gateway.codec.lines import unescape
from gateway.sources.simpty import open_pty

log = logging.getLogger(__name__)

Mode = Literal["stream", "poll"]
Format = Literal["noise", "kv", "csv", "json"]
FORMATS: tuple[Format, ...] = ("noise", "kv", "csv", "json")
MAX_OUTBOX = 64 * 1024  # bytes waiting for the pty; more is dropped
LONG_LINE = 5000  # bytes of an injected over-long line


class SimulatedSerialSensor:
    """A fake serial sensor on a pty, run by a thread; a context manager (sync or async)."""

    def __init__(
        self,
        link: Path | str | None = None,
        *,
        mode: Mode = "stream",
        period: float = 0.5,
        request: bytes = b"MEAS?\r\n",
        fmt: Format | None = None,
        line_end: bytes = b"\r\n",
        reply_delay: float = 0.0,
        garbage_every: int = 0,
        long_every: int = 0,
        bad_utf8_every: int = 0,
        silence_every: int = 0,
        silence_for: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.link = Path(link) if link is not None else None
        self.mode = mode
        self.period = period
        self.request = request
        self.fmt: Format = fmt or ("noise" if mode == "stream" else "kv")
        self.line_end = line_end
        self.reply_delay = reply_delay
        self.garbage_every = garbage_every
        self.long_every = long_every
        self.bad_utf8_every = bad_utf8_every
        self.silence_every = silence_every
        self.silence_for = silence_for
        self.silent = False  # set from any thread to stop (and resume) talking
        self.lines_sent = 0  # lines handed to the pty (including injected faults)
        self.requests_seen = 0
        self.bytes_dropped = 0
        self._random = random.Random(seed)
        self._level = 55.0
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name = ""
        self._outbox = bytearray()
        self._inbox = bytearray()
        self._quiet_until = 0.0
        self._commands: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """What a serial source opens: the link if one was given, else the pty's slave."""
        return str(self.link) if self.link is not None else self._slave_name

    @property
    def slave_name(self) -> str:
        return self._slave_name

    def start(self) -> None:
        self._open_pty()
        self._thread = threading.Thread(target=self._serve, name="sim-serial", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self._close_pty()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def unplug(self) -> None:
        """The adapter goes away: the pty closes (readers get an error) and the link vanishes."""
        self._call(self._close_pty)

    def plug(self) -> None:
        """The adapter comes back, on a new pty behind the same link."""
        self._call(self._open_pty)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the pty -------------------------------------------------------------------------------

    def _open_pty(self) -> None:
        if self._master is not None:
            return
        self._master, self._slave, self._slave_name = open_pty(self.link)
        self._outbox.clear()
        self._inbox.clear()

    def _close_pty(self) -> None:
        if self.link is not None and self._master is not None:
            with contextlib.suppress(FileNotFoundError):
                if os.readlink(self.link) == self._slave_name:
                    self.link.unlink()
        for fd in (self._slave, self._master):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def _call(self, command: Callable[[], None]) -> None:
        """Run ``command`` in the sensor's thread (it owns the fds) and wait for it."""
        if self._thread is None:
            command()
            return
        done = threading.Event()
        self._commands.put((command, done))
        self._wake()
        if not done.wait(5.0):
            raise TimeoutError("the simulated sensor's thread did not answer")

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")

    # -- the thread ----------------------------------------------------------------------------

    def _serve(self) -> None:
        next_line = time.monotonic()
        pending_replies: list[float] = []  # monotonic times replies are due
        while not self._stopping.is_set():
            self._run_commands()
            now = time.monotonic()
            due = [next_line] if self.mode == "stream" else []
            due += pending_replies
            timeout = max(0.0, min(due) - now) if due else 0.5
            readers = [self._wake_r]
            writers = []
            if self._master is not None:
                readers.append(self._master)
                if self._outbox:
                    writers.append(self._master)
            readable, writable, _ = select.select(readers, writers, [], min(timeout, 0.5))
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 256)
            master = self._master
            if master is not None and master in readable:
                pending_replies += [
                    time.monotonic() + self.reply_delay for _ in range(self._read_requests(master))
                ]
            now = time.monotonic()
            if self.mode == "stream" and now >= next_line:
                self._emit()
                next_line += self.period
                if next_line < now:  # fell behind (e.g. the machine slept): no burst
                    next_line = now + self.period
            while pending_replies and pending_replies[0] <= now:
                pending_replies.pop(0)
                self._emit()
            if master is not None and (master in writable or self._outbox):
                self._flush(master)

    def _run_commands(self) -> None:
        while True:
            try:
                command, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command()
            finally:
                done.set()

    def _read_requests(self, master: int) -> int:
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            return 0
        except OSError as exc:  # EIO: no slave open right now
            if exc.errno != errno.EIO:
                raise
            return 0
        self._inbox += data
        count = 0
        while (at := self._inbox.find(self.request)) >= 0:
            del self._inbox[: at + len(self.request)]
            count += 1
        if len(self._inbox) > 4096:
            del self._inbox[: -len(self.request)]
        self.requests_seen += count
        return count

    def _emit(self) -> None:
        now = time.monotonic()
        if self.silent or now < self._quiet_until:
            return
        self.lines_sent += 1
        n = self.lines_sent
        line = self._line(n)
        if self.silence_every and n % self.silence_every == 0:
            self._quiet_until = now + self.silence_for
        if len(self._outbox) + len(line) > MAX_OUTBOX:
            self.bytes_dropped += len(line)
            return
        self._outbox += line

    def _flush(self, master: int) -> None:
        try:
            written = os.write(master, self._outbox)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the pty is going away
            if exc.errno != errno.EIO:
                raise
            self.bytes_dropped += len(self._outbox)
            written = len(self._outbox)
        del self._outbox[:written]

    # -- what the sensor says ------------------------------------------------------------------

    def _line(self, n: int) -> bytes:
        if self.garbage_every and n % self.garbage_every == 0:
            return b"#?! sensor self-test 0x1F !?#" + self.line_end
        if self.long_every and n % self.long_every == 0:
            return b"X" * LONG_LINE + self.line_end
        if self.bad_utf8_every and n % self.bad_utf8_every == 0:
            return b"LAeq=\xff\xfe" + self.line_end
        return self.reading_text().encode() + self.line_end

    def reading_text(self) -> str:
        """The next good line, without line end."""
        self._level = min(95.0, max(35.0, self._level + self._random.uniform(-1.5, 1.5)))
        if self.fmt == "noise":
            lamax = self._level + self._random.uniform(2.0, 9.0)
            return f"LAeq={self._level:.1f} LAmax={lamax:.1f}"
        pm25 = round(self._level / 5, 1)
        values = {"pm25": pm25, "pm10": round(pm25 * 1.6, 1), "temp": round(self._level - 60, 1)}
        if self.fmt == "csv":
            return ",".join(str(v) for v in values.values())
        if self.fmt == "json":
            return json.dumps({**values, "status": "ok"})
        return " ".join(f"{k}={v}" for k, v in values.items())


# ---------------------------------------------------------------------------------------------
# As a process


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.sim serial",
        description="A simulated serial ASCII sensor on a pseudo-terminal.",
    )
    parser.add_argument("--link", required=True, type=Path, help="symlink to the pty's slave")
    parser.add_argument("--mode", choices=["stream", "poll"], default="stream")
    parser.add_argument("--period", type=float, default=1.0, help="stream mode: seconds a line")
    parser.add_argument("--request", type=unescape, default=b"MEAS?\r\n", help="poll mode")
    parser.add_argument("--format", choices=FORMATS, default=None, dest="fmt")
    parser.add_argument("--line-end", type=unescape, default=b"\r\n")
    parser.add_argument("--reply-delay", type=float, default=0.0, help="poll mode: seconds")
    parser.add_argument("--garbage-every", type=int, default=0, metavar="N")
    parser.add_argument("--long-every", type=int, default=0, metavar="N")
    parser.add_argument("--bad-utf8-every", type=int, default=0, metavar="N")
    parser.add_argument(
        "--silence-every", type=int, default=0, metavar="N", help="then quiet for --silence-for"
    )
    parser.add_argument("--silence-for", type=float, default=0.0, metavar="S")
    parser.add_argument("--seed", type=int, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sensor = SimulatedSerialSensor(
        args.link,
        mode=args.mode,
        period=args.period,
        request=args.request,
        fmt=args.fmt,
        line_end=args.line_end,
        reply_delay=args.reply_delay,
        garbage_every=args.garbage_every,
        long_every=args.long_every,
        bad_utf8_every=args.bad_utf8_every,
        silence_every=args.silence_every,
        silence_for=args.silence_for,
        seed=args.seed,
    )
    with sensor:
        print(f"serial sensor ({args.mode}) at {sensor.path} -> {sensor.slave_name}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
