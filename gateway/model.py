"""Value types that flow through the pipeline. Imports nothing of ours.

A source produces one :class:`Sample` per poll of a device; the alarm rules produce
:class:`AlarmEvent`; the buffer gives each a ``seq`` and hands them to the uplink as
:class:`StoredItem`; what eviction or corruption gave up comes back as :class:`Gap`.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

Value = float | int | bool | str

AlarmState = Literal["raised", "cleared"]
Priority = Literal["low", "normal", "high", "critical"]
# "unclean_shutdown": seqs reserved before a crash and not found after it (see buffer.py).
GapReason = Literal["max_size", "max_age", "corrupt_buffer", "unclean_shutdown"]


class Lane(enum.IntEnum):
    """Which queue an item is published from; alarms go before everything else."""

    ALARM = 0
    SAMPLE = 1


class Sample(NamedTuple):
    """One acquisition of one device: one Modbus poll (all its tables; ``ts_ms`` when the poll
    started) or one parsed serial line. The unit of data from the source to the upstream.

    ``values`` maps point names to clean values (a float32 already as the shortest float that
    reads back the same, a scaled value already rounded: see ``codec.registers``); with report by
    exception it holds only the points being sent. Units and types are not here: they are in
    the config (and the retained ``meta`` message).
    """

    device: str
    ts_ms: int
    values: dict[str, Value]
    clock_synced: bool = True


# What a source hands its samples to: one call per poll (or serial line).
SampleSink = Callable[[Sample], None]


def format_value(value: Value | None) -> str:
    """A point's value as the status page and ``street-gateway status`` show it."""
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{round(value, 3):g}" if isinstance(value, float) else str(value)


def format_count(n: int, noun: str) -> str:
    """``1 point``, ``2 points``: a count a person reads."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_duration(seconds: float) -> str:
    """A span as a person reads it at a glance, in its two largest units: ``45s``, ``12m 5s``,
    ``3h 20m``, ``2d 4h`` (a zero second unit is left out: ``5m``, ``1h``; under a second is
    ``<1s``). The page, ``street-gateway status`` and the audit report all write spans so."""
    if 0 < seconds < 1:
        return "<1s"
    s = int(max(0.0, seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size or (unit == "s" and not parts):
            parts.append(f"{s // size}{unit}")
            s %= size
            if len(parts) == 2 or not s:
                break
        elif parts:
            break  # the second unit would be zero: ``2d``, not ``2d 0h``
    return " ".join(parts)


def format_ago(ts_ms: int | None, now_ms: int) -> str:
    """How long ago ``ts_ms`` was (``never`` for None), as ``street-gateway status`` and the
    audit report print it."""
    if ts_ms is None:
        return "never"
    return format_duration(max(0, now_ms - ts_ms) / 1000) + " ago"


def format_bytes(n: float) -> str:
    """``512 B``, ``12.3 MiB``."""
    units = ["B", "KiB", "MiB", "GiB"]
    i = 0
    while n >= 1024 and i < 3:
        n /= 1024
        i += 1
    return f"{n:.1f} {units[i]}" if i else f"{int(n)} B"


def format_link_cost(uplink: dict[str, Any]) -> str:
    """``12.3 MiB sent · 1.2 MiB/h · 181 B per sample`` from ``/status``'s ``uplink``: what an
    LTE plan has to carry, without a calculator."""
    per_sample = uplink.get("bytes_per_sample")
    return (
        f"{format_bytes(uplink.get('bytes_total', 0))} sent · "
        f"{format_bytes(uplink.get('bytes_per_hour', 0))}/h · "
        f"{'-' if per_sample is None else f'{per_sample:g} B'} per sample"
    )


def now_ms() -> int:
    """The wall clock as a sample's ``ts`` is stamped: Unix milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """An alarm rule changed state: ``alarm`` is its name, e.g. ``aq-1/pm25>50``."""

    alarm: str
    state: AlarmState
    value: float
    priority: Priority
    ts_ms: int


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The one result of a command or an alarm's action (since v0.3): an item with its own
    seq, delivered in the alarms' lane. ``state`` is done, refused or failed; ``digest``
    (sha256 of the command's bytes) tells a redelivered command from a replayed one."""

    id: str | None
    by: str | None
    op: str | None
    device: str | None
    point: str | None
    value: Value | None
    state: str
    reason: str | None
    read_back: Value | None
    detail: str
    ts_ms: int
    digest: str | None = None
    problems: tuple[str, ...] | None = None  # a config command's check lines (op "config")


Item = Sample | AlarmEvent | CommandResult  # what the buffer stores


class StoredItem(NamedTuple):
    """A sample, an alarm or a result with the seq the buffer gave it, as the buffer hands it
    to the uplink (a NamedTuple: a backlog drain builds hundreds of thousands a second)."""

    seq: int
    lane: Lane
    ts_ms: int
    item: Sample | AlarmEvent | CommandResult


@dataclass(frozen=True, slots=True)
class Gap:
    """A seq range the buffer gave up (evicted or lost to corruption), to be published."""

    gap_id: int
    from_seq: int
    to_seq: int
    count: int
    reason: GapReason


class StatusEvent(NamedTuple):
    """Something that happened, for the status page's timeline: one per state change.

    ``kind`` is one of docs/reference.md's event kinds (``start``, ``link_down``, ...);
    ``fields`` holds what goes with it (``{"server": ...}``, ``{"outage_s": 62.4}``)."""

    ts_ms: int
    kind: str
    message: str
    fields: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Live figures. Each component owns and updates its own; status and metrics only read them.

DeviceState = Literal["unknown", "ok", "failing", "down"]
GAPS_KEPT = 256


@dataclass(slots=True)
class DeviceStats:
    """One device's health, owned by its source adapter.

    A device is ``unknown`` until its first poll has an outcome (it is polled at once); ``ok``
    after a good poll; ``failing`` after a failed one; ``down`` after several in a row, when it is
    polled with capped backoff so it does not starve its bus. The shared device core
    (``gateway/sources/device.py``) keeps these for every kind.
    """

    name: str
    source: str
    interval_s: float  # the effective interval: its own, or an alarm's while_raised override
    state: DeviceState = "unknown"
    interval_reason: str | None = None  # why interval_s is not the configured one, or None
    last_ok_ts: int | None = None
    reads_ok: int = 0
    reads_failed: int = 0
    parse_errors: int = 0
    polls_skipped: int = 0
    requests_total: int = 0
    last_error: str | None = None
    last_values: dict[str, Value] = field(default_factory=dict)
    # why the device is not read as planned (Modbus: refused merged reads, or config), or None
    read_mode: str | None = None
    state_since_ms: int | None = None  # wall clock of the last change of ``state``


@dataclass(slots=True)
class BufferStats:
    """The durable buffer's figures, owned by the buffer."""

    samples: int = 0  # items held (on disk or in memory): samples and alarms not yet acknowledged
    alarms: int = 0  # of which alarms
    bytes: int = 0  # database + WAL on disk
    oldest_ts: int | None = None
    last_seq: int = 0  # highest seq handed out
    evicted_total: dict[str, int] = field(default_factory=dict)  # by gap reason
    dropped_total: int = 0  # samples refused (memory queue full while the disk failed, or NaN)
    write_errors_total: int = 0
    writable: bool = True
    last_error: str | None = None
    corrupt_files: list[str] = field(default_factory=list)  # files moved aside at start
    # How much more the buffer may grow by: below max_size, and above the free space its file
    # system keeps (5 %); room_low while the file system is under that (health degraded).
    room_bytes: int | None = None
    fs_free_fraction: float | None = None
    room_low: bool = False
    # Every seq range recorded as a gap in this run, counted, and the last GAPS_KEPT of them
    # as (from_seq, to_seq, count, reason): the status timeline's ``evicted`` events.
    gaps_total: int = 0
    recent_gaps: deque[tuple[int, int, int, str]] = field(
        default_factory=lambda: deque(maxlen=GAPS_KEPT)
    )


@dataclass(slots=True)
class UplinkStats:
    """The MQTT link's figures, owned by the uplink."""

    connected: bool = False
    server: str | None = None
    published_total: int = 0  # samples and alarms acknowledged by the broker
    alarms_published_total: int = 0
    gaps_published_total: int = 0
    messages_total: int = 0
    last_publish_ts: int | None = None
    bytes_total: int = 0  # MQTT PUBLISH packets sent, whole
    bytes_per_hour: int = 0  # at the last minute's rate
    bytes_per_sample: float | None = None  # over the last minute
    connects_total: int = 0
    connect_failures_total: int = 0
    last_error: str | None = None
    link_changed_ms: int | None = None  # wall clock of the last connect or loss of the link
    link_lost_ms: int | None = None  # wall clock of the last loss of the link
    inbound_refused: dict[str, int] = field(default_factory=dict)  # reason -> messages refused
    waiting_for: str | None = None  # what holds births and data back (Sparkplug's primary host)
