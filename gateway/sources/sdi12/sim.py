"""Simulated SDI-12 sensors behind an SDI-12 interface, on a pseudo-terminal.

:class:`SimulatedSdi12Bus` owns the master side of a pty in a thread of its own and answers as
a USB SDI-12 adapter relays its sensors: it reads command text (``0M!``, a line end after it is
ignored) and writes each answer as a line ending in CR LF, after the time the exchange takes on
a real bus (break, marking and the characters at 1200 baud: ``char_time`` each; tests shorten
it). The sensors (:class:`SimSensor`) follow SDI-12 1.4:

* ``a!``, ``aI!``; ``aM!``/``aMC!``/``aM1!``... answered ``atttn``, then the service request
  ``a`` when the values are ready; ``aC!``/``aCC!``/``aC1!``... answered ``atttnn``, no service
  request; ``aD0!``.. ``aD9!`` give ``per_answer`` values each, with a CRC after ``aMC!``/``aCC!``,
  and just ``a`` when there are none (not ready, aborted, or all given).
* Any command on the bus before an M measurement is ready aborts it (the break wakes every
  sensor); a C measurement is aborted only by a command to its own sensor.
* An unknown command gets no answer, as the standard says.

Faults on demand, per sensor: ``late_by`` (every answer that much later), ``bad_crc``,
``answer_as`` (answers carry another address), ``truncate`` (D answers cut short, no line
end), ``silent``. ``echo=True`` makes the adapter echo each command line first, as some do.

The default sensor is a river gauge (:class:`RiverGauge`): water level (m), water temperature
(C) and battery (V), three values over ``aD0!`` and ``aD1!``; set its ``level`` to raise the
river. As a process: ``python -m gateway.sim sdi12 --link /tmp/x/gauge [--level-file F]`` serves
until SIGTERM; the level is read from the file (a number in metres) at each measurement when
it exists, so a test or the demo can raise the river from outside.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import heapq
import itertools
import math
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from gateway.sources.sdi12.protocol import crc_text
from gateway.sources.simpty import open_pty

RESPONSE_GAP = 0.015  # a sensor starts its answer within 15 ms of the command (section 7)
WAKE = 0.012 + 0.00833  # the adapter's break and marking before a command
CHAR_TIME = 10 / 1200  # one 7E1 character at 1200 baud
MAX_OUTBOX = 64 * 1024


class SimSensor:
    """One SDI-12 sensor: its address, its values and how it misbehaves."""

    def __init__(
        self,
        address: str,
        values: Sequence[tuple[float, int]] = ((1.0, 3),),
        *,
        announce_s: int = 1,
        ready_s: float | None = None,
        per_answer: int = 2,
        late_by: float = 0.0,
        bad_crc: bool = False,
        answer_as: str | None = None,
        truncate: bool = False,
        silent: bool = False,
        identification: str = "STREETGWSIMSDI100SIM0001",
    ) -> None:
        self.address = address
        self.fixed_values = list(values)  # (value, decimals)
        self.announce_s = announce_s  # ttt
        self.ready_s = announce_s if ready_s is None else ready_s  # when they really are ready
        self.per_answer = per_answer
        self.late_by = late_by
        self.bad_crc = bad_crc
        self.answer_as = answer_as
        self.truncate = truncate
        self.silent = silent
        self.identification = identification
        self.commands_seen: list[str] = []
        self.measurements = 0
        self.aborted = 0
        # the measurement in progress or last made
        self._kind = ""  # "M" or "C"
        self._crc = False
        self._ready_at = 0.0
        self._values: list[str] = []

    def measure(self) -> list[tuple[float, int]]:
        """The values of a new measurement (value, decimals)."""
        return self.fixed_values

    # -- answers (None: no answer) -------------------------------------------------------------

    def answer(self, command: str, now: float) -> tuple[str | None, float | None]:
        """(the answer's text, the time of a service request to send, or None)."""
        self.commands_seen.append(command)
        body = command[1:-1]
        if self._kind and now < self._ready_at:  # addressed before the values were ready
            self._abort()
        if body == "":
            return self.address, None
        if body == "I":
            return f"{self.address}14{self.identification[:31]}", None
        if body[:1] in ("M", "C") and _measure_body(body[1:]):
            return self._start(body[0], body[1:].startswith("C"), now)
        if body[:1] == "D" and body[1:].isdigit() and len(body) == 2:
            return self._data(int(body[1])), None
        return None, None

    def abort_on_break(self, now: float) -> None:
        """A command to another sensor: the break before it aborts a pending M measurement."""
        if self._kind == "M" and now < self._ready_at:
            self._abort()

    def _abort(self) -> None:
        self.aborted += 1
        self._values = []
        self._ready_at = 0.0
        self._kind = ""

    def _start(self, kind: str, crc: bool, now: float) -> tuple[str, float | None]:
        self.measurements += 1
        self._kind, self._crc = kind, crc
        self._ready_at = now + self.ready_s
        self._values = [_value_text(v, d) for v, d in self.measure()]
        count = len(self._values)
        ttt = f"{self.announce_s:03d}"
        if kind == "M":
            request = self._ready_at if self.announce_s else None
            return f"{self.address}{ttt}{count}", request
        return f"{self.address}{ttt}{count:02d}", None

    def _data(self, index: int) -> str:
        chunk = self._values[index * self.per_answer : (index + 1) * self.per_answer]
        text = self.address + "".join(chunk)  # just the address: none (left), or aborted
        if self._crc:
            crc = crc_text(text)
            text += ("A" if crc[0] != "A" else "B") + crc[1:] if self.bad_crc else crc
        return text

    def service_request(self) -> Callable[[], bytes | None]:
        """What to send when the values are ready: ``a``, unless the measurement was aborted
        or another one started meanwhile."""
        measurement = self.measurements

        def request() -> bytes | None:
            if self.measurements != measurement or not self._kind:
                return None
            return self.relabel(self.address).encode() + b"\r\n"

        return request

    def relabel(self, text: str) -> str:
        return (self.answer_as + text[1:]) if self.answer_as else text


def _measure_body(rest: str) -> bool:
    """After M or C: nothing, a C (CRC), a digit 1-9, or C and a digit."""
    rest = rest.removeprefix("C")
    return rest == "" or (len(rest) == 1 and rest in "123456789")


def _value_text(value: float, decimals: int) -> str:
    text = f"{value:+.{decimals}f}"
    return "+0" if text in ("-0", "+0") else text


class RiverGauge(SimSensor):
    """A water-level gauge: level (m), water temperature (C), battery (V); ``level`` (or the
    ``level_file``, when it exists) is the river's level, with a small ripple on it."""

    def __init__(
        self,
        address: str = "0",
        *,
        level: float = 1.2,
        level_file: Path | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("identification", "STREETGWRIVER1001SIM0001")
        super().__init__(address, **options)
        self.level = level
        self.level_file = level_file
        self._count = itertools.count()

    def measure(self) -> list[tuple[float, int]]:
        n = next(self._count)
        level = self.level
        if self.level_file is not None:
            with contextlib.suppress(OSError, ValueError):
                level = float(self.level_file.read_text().strip())
        ripple = 0.004 * math.sin(n / 3)
        return [(level + ripple, 3), (11.5 + 0.1 * math.sin(n / 7), 1), (12.6, 2)]


class SimulatedSdi12Bus:
    """An SDI-12 adapter and its sensors on a pty, run by a thread; a context manager."""

    def __init__(
        self,
        sensors: Sequence[SimSensor],
        link: Path | str | None = None,
        *,
        char_time: float = CHAR_TIME,
        echo: bool = False,
    ) -> None:
        self.sensors = {s.address: s for s in sensors}
        self.link = Path(link) if link is not None else None
        self.char_time = char_time
        self.echo = echo
        self.commands: list[str] = []  # every command seen, in order
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name = ""
        self._inbox = bytearray()
        self._outbox = bytearray()
        # (time, order, bytes to write, or a function giving them then: None writes nothing)
        self._due: list[tuple[float, int, bytes | Callable[[], bytes | None]]] = []
        self._order = itertools.count()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return str(self.link) if self.link is not None else self._slave_name

    @property
    def slave_name(self) -> str:
        return self._slave_name

    def start(self) -> None:
        self._master, self._slave, self._slave_name = open_pty(self.link)
        self._thread = threading.Thread(target=self._serve, name="sim-sdi12", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        if self.link is not None:
            with contextlib.suppress(OSError):
                self.link.unlink()
        for fd in (self._slave, self._master, self._wake_r, self._wake_w):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._wake_r = self._wake_w = -1

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

    # -- the thread ----------------------------------------------------------------------------

    def _serve(self) -> None:
        master = self._master
        assert master is not None
        while not self._stopping.is_set():
            now = time.monotonic()
            timeout = min(0.5, max(0.0, self._due[0][0] - now)) if self._due else 0.5
            writers = [master] if self._outbox else []
            readable, _, _ = select.select([self._wake_r, master], writers, [], timeout)
            if master in readable:
                self._read(master)
            now = time.monotonic()
            while self._due and self._due[0][0] <= now:
                due = heapq.heappop(self._due)[2]
                self._outbox += (due if isinstance(due, bytes) else due()) or b""
            if self._outbox:
                self._flush(master)

    def _read(self, master: int) -> None:
        try:
            data = os.read(master, 4096)
        except (BlockingIOError, OSError):
            return
        self._inbox += data
        while (end := self._inbox.find(b"!")) >= 0:
            raw = bytes(self._inbox[: end + 1]).strip(b"\r\n\t ")
            del self._inbox[: end + 1]
            self._command(raw.decode("ascii", "replace"))
        if len(self._inbox) > 256:  # never a command: noise
            self._inbox.clear()

    def _command(self, command: str) -> None:
        now = time.monotonic()
        self.commands.append(command)
        sent_at = now + WAKE + len(command) * self.char_time  # the command is on the bus
        if self.echo:
            self._later(sent_at, command.encode() + b"\r\n")
        address = command[:1]
        for other in self.sensors.values():
            if other.address != address:
                other.abort_on_break(sent_at)
        sensor = self.sensors.get(address)
        if sensor is None and address == "?" and len(self.sensors) == 1:
            sensor = next(iter(self.sensors.values()))
            command = sensor.address + command[1:]
        if sensor is None or sensor.silent:
            return
        text, request_at = sensor.answer(command, sent_at)
        if text is not None:
            text = sensor.relabel(text)
            at = sent_at + RESPONSE_GAP + len(text) * self.char_time + sensor.late_by
            if sensor.truncate and command[1:2] == "D":
                self._later(at, text[: max(2, len(text) // 2)].encode())
            else:
                self._later(at, text.encode() + b"\r\n")
        if request_at is not None:
            self._later(request_at + sensor.late_by, sensor.service_request())

    def _later(self, at: float, data: bytes | Callable[[], bytes | None]) -> None:
        heapq.heappush(self._due, (at, next(self._order), data))

    def _flush(self, master: int) -> None:
        if len(self._outbox) > MAX_OUTBOX:
            del self._outbox[:-MAX_OUTBOX]
        try:
            written = os.write(master, self._outbox)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            written = len(self._outbox)
        del self._outbox[:written]


# ---------------------------------------------------------------------------------------------
# As a process


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.sim sdi12",
        description="Simulated SDI-12 river gauges behind an SDI-12 adapter, on a pty.",
    )
    parser.add_argument("--link", required=True, type=Path, help="symlink to the pty's slave")
    parser.add_argument(
        "--address", action="append", default=None, help="a gauge's address (repeat; default 0)"
    )
    parser.add_argument("--level", type=float, default=1.2, help="the river's level, m")
    parser.add_argument(
        "--level-file", type=Path, default=None, help="read the level (m) from this file"
    )
    parser.add_argument("--announce", type=int, default=1, help="ttt: seconds announced")
    parser.add_argument(
        "--ready", type=float, default=None, help="seconds until the values are ready"
    )
    parser.add_argument("--char-time", type=float, default=CHAR_TIME, help="seconds a character")
    parser.add_argument("--echo", action="store_true", help="echo each command, as some adapters")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    gauges = [
        RiverGauge(
            address,
            level=args.level,
            level_file=args.level_file,
            announce_s=args.announce,
            ready_s=args.ready,
        )
        for address in args.address or ["0"]
    ]
    with SimulatedSdi12Bus(gauges, args.link, char_time=args.char_time, echo=args.echo) as bus:
        addresses = ", ".join(g.address for g in gauges)
        print(f"SDI-12 river gauge(s) {addresses} at {bus.path} -> {bus.slave_name}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
