"""What happened, for the status page's timeline: events from successive snapshots. Pure.

The daemon takes a :class:`Snapshot` of the live figures about once a second and hands it to
:meth:`EventDetector.observe`, which compares it with the last one and returns one
:class:`~gateway.model.StatusEvent` per change of state (never one per poll): the link going
down and up (with the outage's exact length, from the uplink's own timestamps), devices
failing, going down and coming back, the buffer becoming unwritable and writable again, seq
ranges given up (``evicted``), the clock getting synchronised, background tasks failing.
Events the daemon sees happen itself (``start``, ``stop``, ``reload``, ``reload_refused``,
alarms) are made by the functions at the end of this module.

A device's first outcome is only news when it is bad: ``unknown -> ok`` is how every start
looks. The states last reported per device are seeded from the stored events, so a device that
was down before a restart and answers after it gets its ``device_ok``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gateway.model import (
    AlarmEvent,
    BufferStats,
    DeviceStats,
    StatusEvent,
    UplinkStats,
    format_duration,
)

if TYPE_CHECKING:
    from gateway.supervisor import TaskHealth

EVENT_KINDS = (
    "start", "stop", "reload", "reload_refused", "link_up", "link_down", "device_ok",
    "device_failing", "device_down", "alarm_raised", "alarm_cleared", "buffer_unwritable",
    "buffer_writable", "evicted", "clock_synced", "task_failed", "command",
)  # fmt: skip
_DEVICE_KINDS = {"ok": "device_ok", "failing": "device_failing", "down": "device_down"}


@dataclass(frozen=True, slots=True)
class DeviceSnapshot:
    name: str
    state: str
    since_ms: int | None
    last_error: str | None
    reads_failed: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The figures events are told from, copied (the live ones change in place)."""

    ts_ms: int
    connected: bool = False
    server: str | None = None
    link_changed_ms: int | None = None
    link_lost_ms: int | None = None
    link_error: str | None = None
    writable: bool = True
    buffer_error: str | None = None
    gaps_total: int = 0
    recent_gaps: tuple[tuple[int, int, int, str], ...] = ()
    clock_synced: bool = True
    devices: tuple[DeviceSnapshot, ...] = ()
    task_failures: tuple[tuple[str, int, str | None], ...] = ()  # name, failures, last error

    @classmethod
    def of(
        cls,
        ts_ms: int,
        *,
        uplink: UplinkStats,
        buffer: BufferStats,
        clock_synced: bool,
        devices: Iterable[DeviceStats],
        tasks: Iterable[TaskHealth],
    ) -> Snapshot:
        return cls(
            ts_ms,
            connected=uplink.connected,
            server=uplink.server,
            link_changed_ms=uplink.link_changed_ms,
            link_lost_ms=uplink.link_lost_ms,
            link_error=uplink.last_error,
            writable=buffer.writable,
            buffer_error=buffer.last_error,
            gaps_total=buffer.gaps_total,
            recent_gaps=tuple(buffer.recent_gaps),
            clock_synced=clock_synced,
            devices=tuple(
                DeviceSnapshot(d.name, d.state, d.state_since_ms, d.last_error, d.reads_failed)
                for d in devices
            ),
            task_failures=tuple((t.name, t.failures, t.last_error) for t in tasks),
        )


@dataclass
class EventDetector:
    """Compares each snapshot with the one before; see the module docstring."""

    _last: Snapshot | None = None
    _down_since_ms: int | None = None  # when the link was lost, while a link_down stands
    # device -> (state, since, reads_failed) as last told
    _reported: dict[str, tuple[str, int | None, int]] = field(default_factory=dict)
    _gaps_seen: int = 0
    _failures: dict[str, int] = field(default_factory=dict)

    @classmethod
    def after(cls, stored: Iterable[StatusEvent]) -> EventDetector:
        """A detector that knows each device's last reported state from the stored events
        (newest first, as :meth:`gateway.buffer.Buffer.events` gives them)."""
        detector = cls()
        seen = set()
        for event in stored:
            device = event.fields.get("device")
            state = event.kind.removeprefix("device_")
            if isinstance(device, str) and state in _DEVICE_KINDS and device not in seen:
                seen.add(device)  # the newest says it; an ok one is no news after a start
                if state != "ok":
                    detector._reported[device] = (state, event.ts_ms, 0)
        return detector

    def observe(self, now: Snapshot) -> list[StatusEvent]:
        """The events between the last snapshot and ``now``, oldest first."""
        last = self._last or Snapshot(now.ts_ms, clock_synced=now.clock_synced)
        self._last = now
        events = [
            *self._link(last, now),
            *self._devices(now),
            *self._buffer(last, now),
            *self._tasks(now),
        ]
        if now.clock_synced and not last.clock_synced:
            events.append(StatusEvent(now.ts_ms, "clock_synced", "system clock synchronised", {}))
        events.sort(key=lambda e: e.ts_ms)
        return events

    def _link(self, last: Snapshot, now: Snapshot) -> list[StatusEvent]:
        events = []
        # A reconnect between two snapshots shows as a new connect time while connected.
        flapped = last.connected and now.connected and now.link_changed_ms != last.link_changed_ms
        if last.connected and (not now.connected or flapped):
            lost = now.link_lost_ms if now.link_lost_ms is not None else now.ts_ms
            self._down_since_ms = lost
            reason = now.link_error if not now.connected else None
            server = last.server
            message = f"link to {server} lost" + (f": {_reason(reason, server)}" if reason else "")
            events.append(StatusEvent(lost, "link_down", message, {"server": server}))
        if now.connected and (not last.connected or flapped):
            up = now.link_changed_ms if now.link_changed_ms is not None else now.ts_ms
            fields: dict[str, Any] = {"server": now.server}
            message = f"link to {now.server} up"
            if self._down_since_ms is not None:
                outage_s = round(max(0, up - self._down_since_ms) / 1000, 1)
                fields["outage_s"] = outage_s
                message += f" after {format_duration(outage_s)} down"
                self._down_since_ms = None
            events.append(StatusEvent(up, "link_up", message, fields))
        return events

    def _devices(self, now: Snapshot) -> list[StatusEvent]:
        events = []
        for d in now.devices:
            if d.state not in _DEVICE_KINDS:
                continue  # unknown: not polled yet (a start or a reload)
            before = self._reported.get(d.name)
            if before is None and d.state == "ok":
                self._reported[d.name] = (d.state, d.since_ms, d.reads_failed)
                continue
            if before is not None and before[0] == d.state:
                # ok -> failing -> ok between two looks: a new since and more failed polls (a
                # reload's new device has a new since too, but its count starts again at 0).
                flapped = (
                    d.state == "ok"
                    and d.since_ms not in (before[1], None)
                    and d.reads_failed > before[2]
                )
                if d.state == "ok":
                    self._reported[d.name] = (d.state, d.since_ms, d.reads_failed)
                if not flapped:
                    continue
            ts = d.since_ms if d.since_ms is not None else now.ts_ms
            self._reported[d.name] = (d.state, d.since_ms, d.reads_failed)
            fields: dict[str, Any] = {"device": d.name}
            if d.state == "ok":
                message = f"{d.name} ok again"
                if before is not None and before[0] != "ok" and before[1] is not None:
                    fields["was"] = before[0]
                    message += f" after {format_duration((ts - before[1]) / 1000)} {before[0]}"
            else:
                message = f"{d.name} {d.state}" + (f": {d.last_error}" if d.last_error else "")
            events.append(StatusEvent(ts, _DEVICE_KINDS[d.state], message, fields))
        return events

    def _buffer(self, last: Snapshot, now: Snapshot) -> list[StatusEvent]:
        events = []
        if last.writable and not now.writable:
            why = f": {now.buffer_error}" if now.buffer_error else ""
            message = f"buffer cannot be written{why}; samples wait in memory"
            events.append(StatusEvent(now.ts_ms, "buffer_unwritable", message, {}))
        elif now.writable and not last.writable:
            events.append(StatusEvent(now.ts_ms, "buffer_writable", "buffer writable again", {}))
        new = min(now.gaps_total - self._gaps_seen, len(now.recent_gaps))
        self._gaps_seen = now.gaps_total
        merged: dict[str, list[int]] = {}  # reason -> [from, to, count], per reason and look
        for first, to, count, reason in now.recent_gaps[len(now.recent_gaps) - new :]:
            gap = merged.setdefault(reason, [first, to, 0])
            gap[0], gap[1], gap[2] = min(gap[0], first), max(gap[1], to), gap[2] + count
        for reason, (first, to, count) in merged.items():
            message = f"gave up {count:,} items, seq {first}..{to} ({reason})"
            gap_fields = {"from_seq": first, "to_seq": to, "count": count, "reason": reason}
            events.append(StatusEvent(now.ts_ms, "evicted", message, {"gap": gap_fields}))
        return events

    def _tasks(self, now: Snapshot) -> list[StatusEvent]:
        events = []
        for name, failures, error in now.task_failures:
            if failures > self._failures.get(name, 0):
                message = f"task {name} failed: {error}; restarting it"
                events.append(StatusEvent(now.ts_ms, "task_failed", message, {"task": name}))
            self._failures[name] = failures
        return events


def _reason(error: str, server: str | None) -> str:
    """The uplink's ``lost link to S: why`` without repeating the server."""
    return error.removeprefix(f"lost link to {server}: ")


# ---------------------------------------------------------------------------------------------
# Events the daemon sees happen itself


def start_event(
    ts_ms: int, version: str, previous: Literal["clean", "crash"] | None
) -> StatusEvent:
    """``previous`` is None for a new buffer: there was no previous run to speak of."""
    if previous is None:
        return StatusEvent(ts_ms, "start", f"started v{version} with a new buffer", {})
    how = "after a crash (the last run did not stop cleanly)" if previous == "crash" else ""
    message = f"started v{version} " + (how or "(the last run stopped cleanly)")
    return StatusEvent(ts_ms, "start", message, {"previous": previous})


def stop_event(ts_ms: int) -> StatusEvent:
    return StatusEvent(ts_ms, "stop", "stopping: polling stopped, committing what is held", {})


def reload_event(ts_ms: int, path: str, summary: str) -> StatusEvent:
    return StatusEvent(ts_ms, "reload", f"reloaded {path}: {summary}", {})


def reload_refused_event(ts_ms: int, problems: list[str]) -> StatusEvent:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    message = f"reload refused, the running config stays: {problems[0]}{more}"
    return StatusEvent(ts_ms, "reload_refused", message, {"problems": problems[:10]})


def alarm_event(event: AlarmEvent) -> StatusEvent:
    value = f"{round(event.value, 3):g}"
    message = f"alarm {event.alarm} {event.state} at {value} ({event.priority})"
    return StatusEvent(
        event.ts_ms,
        f"alarm_{event.state}",
        message,
        {"alarm": event.alarm, "value": event.value, "priority": event.priority},
    )
