"""The binary frames of optical dust sensors (Nova Fitness SDS011, Plantower PMS5003). Pure.

:class:`FrameDecoder` takes bytes as they arrive and hands back whole frames, h11-style: feed
it what the port read and it returns the frames those bytes complete (an empty list means "need
more"). It resyncs on garbage: bytes before a header are skipped, and a candidate frame whose
checksum (or SDS011 tail) is wrong costs one byte, then the scan goes on from the next one, so
a valid frame that follows a false start is still found. After each :meth:`~FrameDecoder.feed`
it holds less than one frame, whatever came in: garbage never grows memory.

Layouts, from the datasheets (Nova Fitness "Laser Dust Sensor Control Protocol V1.3"; Plantower
"PMS5003 series data manual" 2016):

* SDS011, sensor to host, 10 bytes: ``AA C0 pm25_lo pm25_hi pm10_lo pm10_hi id1 id2 cs AB``;
  values in tenths of ug/m3; ``cs`` = sum of the six data bytes, low byte. A reply to a command
  is ``AA C5 cmd d d d id1 id2 cs AB``. Host to sensor, 19 bytes: ``AA B4 cmd d2..d13 FF FF
  cs AB`` (``FF FF``: every sensor), ``cs`` = sum of bytes 2..16, low byte.
* PMS5003, sensor to host: ``42 4D`` + frame length (big-endian, 28 for data) + 13 big-endian
  words + checksum (sum of every byte before it, 16 bits). Words 4-6 are PM1.0, PM2.5 and PM10
  "under atmospheric environment" in ug/m3. A reply to a command has length 4 (8 bytes). Host to
  sensor, 7 bytes: ``42 4D cmd data_hi data_lo`` + the 16-bit sum of those five.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Model = Literal["sds011", "pms5003"]
MODELS: tuple[Model, ...] = ("sds011", "pms5003")
Direction = Literal["from_sensor", "to_sensor"]

SDS_HEAD, SDS_TAIL = 0xAA, 0xAB
SDS_DATA, SDS_REPLY, SDS_COMMAND = 0xC0, 0xC5, 0xB4
PMS_HEAD = b"BM"  # 0x42 0x4D
PMS_DATA_LENGTH, PMS_REPLY_LENGTH = 28, 4

# SDS011 commands (the first data byte of a host frame) and PMS5003 command bytes
SDS_REPORT_MODE, SDS_QUERY, SDS_SLEEP_WORK = 0x02, 0x04, 0x06
PMS_READ, PMS_MODE, PMS_SLEEP_WAKE = 0xE2, 0xE1, 0xE4


@dataclass(frozen=True, slots=True)
class Reading:
    """A measurement frame: mass concentrations in ug/m3 (``pm1`` only from a PMS5003)."""

    pm25: float
    pm10: float
    pm1: float | None
    raw: bytes

    def values(self) -> dict[str, float]:
        found = {"pm25": self.pm25, "pm10": self.pm10}
        return found if self.pm1 is None else {"pm1": self.pm1, **found}


@dataclass(frozen=True, slots=True)
class Reply:
    """A sensor's answer to a command (SDS011 ``AA C5``, PMS5003 length 4)."""

    command: int
    data: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class Command:
    """A host's command, as a sensor (the simulator) reads it."""

    command: int
    data: bytes
    raw: bytes


Event = Reading | Reply | Command


class FrameDecoder:
    """Frames out of a byte stream of one model and direction; see the module's docstring.

    Counters: ``frames`` (valid frames out), ``bad_checksums`` (frames with a sound layout but
    a wrong checksum: counted, never returned) and ``skipped_bytes`` (bytes that were not part
    of a valid frame: noise, a frame cut short, the first byte of a bad one).
    """

    def __init__(self, model: Model, direction: Direction = "from_sensor") -> None:
        self.model: Model = model
        self.direction: Direction = direction
        self.max_frame = 32 if model == "pms5003" else 19 if direction == "to_sensor" else 10
        self._head = SDS_HEAD if model == "sds011" else PMS_HEAD[0]
        self._buffer = bytearray()
        self.frames = 0
        self.bad_checksums = 0
        self.skipped_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (always less than one frame)."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget a partial frame (the port was reopened); counters are kept."""
        self.skipped_bytes += len(self._buffer)
        self._buffer.clear()

    def feed(self, data: bytes) -> list[Event]:
        """The frames ``data`` completes, in order; ``[]``: need more bytes."""
        buffer = self._buffer
        buffer += data
        events: list[Event] = []
        while buffer:
            start = buffer.find(self._head)
            if start < 0:
                self._skip(len(buffer))
                break
            if start:
                self._skip(start)
            size = self._size()
            if size == 0:  # not enough bytes to tell yet
                break
            if size < 0:  # a header byte that starts no frame
                self._skip(1)
                continue
            if len(buffer) < size:
                break
            frame = bytes(buffer[:size])
            verdict = self._verdict(frame)
            if verdict != "ok":
                if verdict == "checksum":
                    self.bad_checksums += 1
                self._skip(1)  # a valid frame may start inside this false one
                continue
            del buffer[:size]
            self.frames += 1
            events.append(self._event(frame))
        return events

    def _skip(self, count: int) -> None:
        del self._buffer[:count]
        self.skipped_bytes += count

    def _size(self) -> int:
        """The size of the frame that starts the buffer: 0 unknown yet, -1 none."""
        buffer = self._buffer
        if len(buffer) < 2:
            return 0
        kind = buffer[1]
        if self.model == "sds011":
            if self.direction == "to_sensor":
                return 19 if kind == SDS_COMMAND else -1
            return 10 if kind in (SDS_DATA, SDS_REPLY) else -1
        if kind != PMS_HEAD[1]:
            return -1
        if self.direction == "to_sensor":
            return 7
        if len(buffer) < 4:
            return 0
        length = int.from_bytes(buffer[2:4], "big")
        return 4 + length if length in (PMS_DATA_LENGTH, PMS_REPLY_LENGTH) else -1

    def _verdict(self, frame: bytes) -> Literal["ok", "checksum", "layout"]:
        if self.model == "sds011":
            if frame[-1] != SDS_TAIL:
                return "layout"
            return "ok" if sds_checksum(frame[2:-2]) == frame[-2] else "checksum"
        body, check = frame[:-2], int.from_bytes(frame[-2:], "big")
        return "ok" if pms_checksum(body) == check else "checksum"

    def _event(self, frame: bytes) -> Event:
        if self.model == "sds011":
            if self.direction == "to_sensor":
                return Command(frame[2], frame[3:15], frame)
            if frame[1] == SDS_REPLY:
                return Reply(frame[2], frame[3:6], frame)
            pm25 = int.from_bytes(frame[2:4], "little") / 10
            pm10 = int.from_bytes(frame[4:6], "little") / 10
            return Reading(pm25, pm10, None, frame)
        if self.direction == "to_sensor":
            return Command(frame[2], frame[3:5], frame)
        if len(frame) == 4 + PMS_REPLY_LENGTH:
            return Reply(frame[4], frame[5:6], frame)
        pm1, pm25, pm10 = (int.from_bytes(frame[i : i + 2], "big") for i in (10, 12, 14))
        return Reading(pm25, pm10, pm1, frame)


def sds_checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def pms_checksum(data: bytes) -> int:
    return sum(data) & 0xFFFF


# ---------------------------------------------------------------------------------------------
# What a host sends


def sds_command(command: int, *data: int) -> bytes:
    """A 19-byte SDS011 command to every sensor on the line (device id FF FF)."""
    body = bytes([command, *data]).ljust(13, b"\0") + b"\xff\xff"
    return bytes([SDS_HEAD, SDS_COMMAND]) + body + bytes([sds_checksum(body), SDS_TAIL])


def pms_command(command: int, value: int = 0) -> bytes:
    """A 7-byte PMS5003 command."""
    body = PMS_HEAD + bytes([command]) + value.to_bytes(2, "big")
    return body + pms_checksum(body).to_bytes(2, "big")


def sleep_command(model: Model) -> bytes:
    """Stop the fan and laser (SDS011: "set sleep"; PMS5003: "sleep")."""
    if model == "sds011":
        return sds_command(SDS_SLEEP_WORK, 1, 0)
    return pms_command(PMS_SLEEP_WAKE, 0)


def wake_command(model: Model) -> bytes:
    """Start the fan and laser (SDS011: "set work"; PMS5003: "wakeup")."""
    if model == "sds011":
        return sds_command(SDS_SLEEP_WORK, 1, 1)
    return pms_command(PMS_SLEEP_WAKE, 1)


def active_mode_command(model: Model) -> bytes:
    """Report on its own, about once a second (SDS011: "active", PMS5003: "active mode")."""
    return sds_command(SDS_REPORT_MODE, 1, 0) if model == "sds011" else pms_command(PMS_MODE, 1)


# ---------------------------------------------------------------------------------------------
# What a sensor sends (the simulator, the tests)


def sds_reading(pm25: float, pm10: float, device_id: int = 0xA160) -> bytes:
    data = (
        round(pm25 * 10).to_bytes(2, "little")
        + round(pm10 * 10).to_bytes(2, "little")
        + device_id.to_bytes(2, "big")
    )
    return bytes([SDS_HEAD, SDS_DATA]) + data + bytes([sds_checksum(data), SDS_TAIL])


def sds_reply(command: int, *data: int, device_id: int = 0xA160) -> bytes:
    body = bytes([command, *data]).ljust(4, b"\0") + device_id.to_bytes(2, "big")
    return bytes([SDS_HEAD, SDS_REPLY]) + body + bytes([sds_checksum(body), SDS_TAIL])


def pms_reading(
    pm1: int, pm25: int, pm10: int, *, cf1: tuple[int, int, int] | None = None
) -> bytes:
    """A 32-byte PMS5003 frame; the CF=1 values default to the atmospheric ones plus a bit, so a
    decoder that reads the wrong words shows it."""
    standard = cf1 or (pm1 + 1, pm25 + 2, pm10 + 3)
    counts = (pm1 * 90 + 300, pm25 * 30 + 100, pm25 * 6 + 20, pm10, pm10 // 3, pm10 // 9)
    words = (*standard, pm1, pm25, pm10, *counts, 0x9700)  # version 0x97, error code 0
    body = PMS_HEAD + PMS_DATA_LENGTH.to_bytes(2, "big")
    body += b"".join(w.to_bytes(2, "big") for w in words)
    return body + pms_checksum(body).to_bytes(2, "big")


def pms_reply(command: int, value: int) -> bytes:
    body = PMS_HEAD + PMS_REPLY_LENGTH.to_bytes(2, "big") + bytes([command, value])
    return body + pms_checksum(body).to_bytes(2, "big")
