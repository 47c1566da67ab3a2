"""A simulated dust sensor (SDS011 or PMS5003) on a pseudo-terminal, for tests, demos and trying
a config by hand.

:class:`SimulatedDustSensor` owns the master side of a pty in a thread of its own; a source
opens the slave side (:attr:`~SimulatedDustSensor.path`, a stable symlink when ``link`` is
given). While awake it sends one real measurement frame every ``period``; it reads the host's
commands with the same pure decoder the gateway uses, answers them as the datasheet says (an
SDS011 replies ``AA C5 ...``; a PMS5003 replies with a length-4 frame), records each one in
:attr:`commands` (``"sleep"``, ``"wake"``, ``"active"``, ...) and only sends frames while
awake. For ``settle`` seconds after waking it reports :data:`UNSETTLED` (a fan not yet up to
speed), so a test can see that readings taken during the warm-up are dropped.

Faults on demand: every Nth frame with a bad checksum (``bad_checksum_every``) or cut in half
(``cut_every``), :meth:`send_noise` for a burst of random bytes, :attr:`silent` to stop talking,
:attr:`deaf_to_sleep` to miss sleep commands. :attr:`sent` holds the values of the good frames.

As a process: ``python -m gateway.sim particulate --model sds011 --link /tmp/x/dust`` serves
until SIGTERM and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import random
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from gateway.sources.particulate.frames import (
    MODELS,
    PMS_MODE,
    PMS_READ,
    PMS_SLEEP_WAKE,
    SDS_QUERY,
    SDS_REPORT_MODE,
    SDS_SLEEP_WORK,
    Command,
    FrameDecoder,
    Model,
    pms_reading,
    pms_reply,
    sds_reading,
    sds_reply,
)
from gateway.sources.simpty import open_pty

MAX_OUTBOX = 64 * 1024  # bytes waiting for the pty; more is dropped, like a UART nobody reads
UNSETTLED = 999.0  # what it reports during its settle time: a value no real street shows


class SimulatedDustSensor:
    """A fake dust sensor on a pty, run by a thread; a context manager (sync or async)."""

    def __init__(
        self,
        model: Model,
        link: Path | str | None = None,
        *,
        period: float = 1.0,
        awake: bool = True,
        settle: float = 0.0,
        talk_for: float | None = None,
        bad_checksum_every: int = 0,
        cut_every: int = 0,
        seed: int | None = None,
    ) -> None:
        self.model: Model = model
        self.link = Path(link) if link is not None else None
        self.period = period
        self.awake = awake
        self.settle = settle
        self.talk_for = talk_for  # seconds it reports after each wake-up (None: until asleep)
        self.bad_checksum_every = bad_checksum_every
        self.cut_every = cut_every
        self.silent = False  # set from any thread to stop (and resume) talking
        self.deaf_to_sleep = False  # a sleep command lost on the wire: it keeps measuring
        self.commands: list[str] = []  # the host's commands, by name, in order
        self.frames_sent = 0  # frames handed to the pty, faulty ones included
        self.good_frames_sent = 0
        self.sent: deque[dict[str, float]] = deque(maxlen=10_000)  # values of the good frames
        self.bytes_dropped = 0
        self._random = random.Random(seed)
        self._level = 12.0
        self._woke_at = time.monotonic()
        self._decoder = FrameDecoder(model, "to_sensor")
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name = ""
        self._outbox = bytearray()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return str(self.link) if self.link is not None else self._slave_name

    @property
    def slave_name(self) -> str:
        return self._slave_name

    def start(self) -> None:
        self._master, self._slave, self._slave_name = open_pty(self.link)
        self._thread = threading.Thread(target=self._serve, name="sim-dust", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
        for fd in (self._slave, self._master):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.stop()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.stop()

    def send_noise(self, count: int) -> None:
        """Queue ``count`` random bytes (no frame header among them), as a loose wire gives."""
        head = 0xAA if self.model == "sds011" else 0x42
        noise = bytes(b for b in self._random.randbytes(count * 2) if b != head)[:count]
        self._queue(noise)

    # -- the thread ----------------------------------------------------------------------------

    def _serve(self) -> None:
        master = self._master
        assert master is not None
        next_frame = time.monotonic()
        while not self._stopping.is_set():
            with self._lock:
                writers = [master] if self._outbox else []
            timeout = min(max(0.0, next_frame - time.monotonic()), 0.1)
            readable, _, _ = select.select([master], writers, [], timeout)
            if readable:
                self._read_commands(master)
            now = time.monotonic()
            if now >= next_frame:
                if self._talking(now):
                    self._send_frame(now)
                next_frame = max(next_frame + self.period, now)
            self._flush(master)

    def _talking(self, now: float) -> bool:
        if not self.awake or self.silent:
            return False
        return self.talk_for is None or now - self._woke_at < self.talk_for

    def _read_commands(self, master: int) -> None:
        try:
            data = os.read(master, 4096)
        except (BlockingIOError, OSError):  # EIO: no slave open right now
            return
        for event in self._decoder.feed(data):
            if isinstance(event, Command):
                self._obey(event)

    def _obey(self, command: Command) -> None:
        """Do what a real sensor does with ``command`` and answer it."""
        code, data = command.command, command.data
        if self.model == "sds011":
            # data[0] is 1 for "set" (0: query the setting), data[1] the setting
            names = {SDS_SLEEP_WORK: ("sleep", "wake"), SDS_REPORT_MODE: ("active", "query")}
            if code in names and data[0] == 1:
                name = names[code][data[1] & 1]
            else:
                name = "read" if code == SDS_QUERY else f"0x{code:02x}"
            if code == SDS_QUERY:
                self._send_frame(time.monotonic())
            else:
                self._queue(sds_reply(code, *data[:3]))
        else:
            value = data[1]
            names = {PMS_SLEEP_WAKE: ("sleep", "wake"), PMS_MODE: ("passive", "active")}
            name = (
                names[code][value & 1]
                if code in names
                else "read"
                if code == PMS_READ
                else (f"0x{code:02x}")
            )
            if code == PMS_READ:
                self._send_frame(time.monotonic())
            elif not (code == PMS_SLEEP_WAKE and value == 1):  # a wake-up is answered by data
                self._queue(pms_reply(code, value))
        self.commands.append(name)
        if name == "wake" and not self.awake:
            self.awake = True
            self._woke_at = time.monotonic()
        elif name == "sleep" and not self.deaf_to_sleep:
            self.awake = False

    def _send_frame(self, now: float) -> None:
        self.frames_sent += 1
        n = self.frames_sent
        good, values = self._frame(now)
        frame = bytearray(good)
        if self.bad_checksum_every and n % self.bad_checksum_every == 0:
            frame[-2] ^= 0x5A  # SDS011: the checksum byte; PMS5003: its high byte
        elif self.cut_every and n % self.cut_every == 0:
            del frame[len(frame) // 2 :]  # the rest was lost on the wire
        else:
            self.good_frames_sent += 1
            self.sent.append(values)
        self._queue(bytes(frame))

    def _frame(self, now: float) -> tuple[bytes, dict[str, float]]:
        """The next measurement frame and the values it carries."""
        self._level = min(150.0, max(2.0, self._level + self._random.uniform(-0.8, 0.8)))
        pm25 = UNSETTLED if now - self._woke_at < self.settle else round(self._level, 1)
        if self.model == "sds011":
            pm10 = round(min(pm25 * 1.6, 999.9), 1)
            return sds_reading(pm25, pm10), {"pm25": pm25, "pm10": pm10}
        pm1, pm, pm10 = round(pm25 * 2 / 3), round(pm25), round(pm25 * 1.5)
        return pms_reading(pm1, pm, pm10), {"pm1": pm1, "pm25": pm, "pm10": pm10}

    def _queue(self, data: bytes) -> None:
        with self._lock:
            if len(self._outbox) + len(data) > MAX_OUTBOX:
                self.bytes_dropped += len(data)
                return
            self._outbox += data

    def _flush(self, master: int) -> None:
        with self._lock:
            if not self._outbox:
                return
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


# ---------------------------------------------------------------------------------------------
# As a process


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.sim particulate",
        description="A simulated SDS011 or PMS5003 dust sensor on a pseudo-terminal.",
    )
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--link", required=True, type=Path, help="symlink to the pty's slave")
    parser.add_argument("--period", type=float, default=1.0, help="seconds a frame while awake")
    parser.add_argument("--asleep", action="store_true", help="start asleep (wait for a wake-up)")
    parser.add_argument("--settle", type=float, default=0.0, help=f"report {UNSETTLED:g} so long")
    parser.add_argument("--bad-checksum-every", type=int, default=0, metavar="N")
    parser.add_argument("--cut-every", type=int, default=0, metavar="N")
    parser.add_argument("--seed", type=int, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sensor = SimulatedDustSensor(
        args.model,
        args.link,
        period=args.period,
        awake=not args.asleep,
        settle=args.settle,
        bad_checksum_every=args.bad_checksum_every,
        cut_every=args.cut_every,
        seed=args.seed,
    )
    with sensor:
        print(f"{args.model} at {sensor.path} -> {sensor.slave_name}", flush=True)
        told = 0
        while not stop.wait(0.2):
            for command in sensor.commands[told:]:  # what the host told it, for a person or a test
                print(f"command: {command}", flush=True)
            told = len(sensor.commands)
    return 0


if __name__ == "__main__":
    sys.exit(main())
