"""The command channel and the alarms' actions: each write's pipeline, and its one result.

:meth:`Commands.receive` is called with a message of ``P/G/commands`` (through the uplink's
inbound guard, which has bounded its size). It parses and authenticates the command at once,
pure (``message``); a refusal becomes a result straight away. An accepted command, and each
action of an alarm's transition (:meth:`Commands.on_alarm`), waits in a bounded queue for
:meth:`Commands.run`, the one task that writes: authorize (``authorize``) → the device's
source writes once and reads back → the result.

A ``config`` command (the fleet's remote config), once authenticated, waits in a queue of its
own for :meth:`Commands.run`'s second task, which hands its text to ``remote`` (the daemon's
``RemoteConfigurator.apply``: check, trial, proof, keep or roll back, up to
``fleet.confirm_within``); what that returns is its result, with the check lines as
``problems``. A config command is always authenticated, even with ``require_signature: false``.

Every command and action gets exactly one result: a :class:`~gateway.model.CommandResult`
put in the buffer, with its own seq, in the alarms' lane (stored, delivered first, audited).
A command is remembered by id with the sha256 of its bytes and its result (in memory, and in
the ``command_ids`` table of the buffer's file, written on a connection of its own right after
the result is put: a result acknowledged before the buffer's commit is never written there, but
its id must be): the same bytes again (a QoS 1 redelivery) get the first result again, same
seq, and write nothing; other bytes under a known id are ``replayed``, also after a restart.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, get_args

from gateway.buffer.codec import CommandIdRow, command_id_row, result_from_body
from gateway.commands.authorize import Points, RateLimiter, authorize
from gateway.commands.message import (
    ID_PATTERN,
    Command,
    Refusal,
    authenticate,
    check_time,
    parse,
)
from gateway.commands.outcome import Outcome, State
from gateway.config import Config
from gateway.config.writes import Rate, WriteRequest
from gateway.identity import read_public_key
from gateway.keys import PublicKey
from gateway.model import AlarmEvent, CommandResult, StatusEvent, Value, now_ms
from gateway.uplink.wire import Refused

log = logging.getLogger(__name__)

QUEUE_SIZE = 64  # writes waiting for the device; more at once is a flood, refused
CONFIG_QUEUE_SIZE = 4  # config commands waiting while one is on trial (minutes each)
# Refusals before a command is authenticated get results (stored items) at most this often: a
# flood of garbage on the topic must not become a flood in the buffer. Past it they are
# refused by the inbound guard (counted as ``unanswered``, logged per burst) without a result.
UNAUTHENTICATED_RESULTS = Rate(60, 60.0)
_BEFORE_AUTH = frozenset({"bad_request", "unknown_key", "bad_signature"})
REMEMBERED = 10_000  # answered command ids kept in memory at most (the oldest go first)
KEEP_IDS_MS = 86_400_000  # a day: past any max_age
STATES: tuple[State, ...] = get_args(State)


class WriteTarget(Protocol):
    async def write(self, device_name: str, point_name: str, value: Value) -> Outcome: ...


class Buffer(Protocol):
    def put(self, item: CommandResult) -> int | None: ...


class RemoteOutcome(Protocol):
    """What became of a remote config (``gateway.fleet.remote.RemoteResult``)."""

    @property
    def state(self) -> State: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def problems(self) -> Sequence[str]: ...
    @property
    def detail(self) -> str: ...


ApplyConfig = Callable[[bytes, str], Awaitable[RemoteOutcome]]  # (yaml, command id)


@dataclass(frozen=True, slots=True)
class _Job:
    id: str | None
    by: str
    device: str
    point: str
    value: Value | None
    digest: str | None


@dataclass
class _Answer:
    digest: str
    seq: int | None
    result: CommandResult | None  # None while its write is under way


class Commands:
    def __init__(
        self,
        config: Config,
        buffer: Buffer,
        *,
        targets: Callable[[], Mapping[str, WriteTarget]],
        clock_synced: Callable[[], bool],
        record_event: Callable[[StatusEvent], None] | None = None,
        remote: ApplyConfig | None = None,
        path: Path | None = None,
        now: Callable[[], int] = now_ms,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._buffer = buffer
        self._targets = targets
        self._clock_synced = clock_synced
        self._record = record_event
        self._now = now
        self._monotonic = monotonic
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(QUEUE_SIZE)
        self._remote = remote
        self._configs: asyncio.Queue[tuple[_Job, bytes]] = asyncio.Queue(CONFIG_QUEUE_SIZE)
        self._rates = RateLimiter()
        self._answers: collections.OrderedDict[str, _Answer] = collections.OrderedDict()
        self._path = path  # the buffer's file: its command_ids table
        self._unsaved: list[CommandIdRow] = []
        self._unsaved_ready = asyncio.Event()
        for cid, digest, ts_ms, seq, body in answered_commands(path, now()) if path else ():
            self._remember(cid, _Answer(digest, seq, result_from_body(ts_ms, body)))
        self.results: collections.Counter[str] = collections.Counter()  # state -> count
        self._writes = 0  # unsigned write requests numbered for their results' ids
        self.last_writes: dict[str, CommandResult] = {}  # "device/point" -> its last result
        self.configure(config)

    def configure(self, config: Config) -> None:
        """The trusted keys, limits and actions of a (re)loaded config."""
        self._config = config
        commands = config.commands
        self.enabled = commands is not None
        self._max_age_s = commands.max_age if commands else 120.0
        self._required = commands.require_signature if commands else True
        self._keys: dict[str, PublicKey] = {}
        for key in commands.trusted_keys if commands else ():
            self._keys[key.name] = read_public_key(key.public_key_file)  # checked by load
        self._points: Points = {
            spec.name: {p.name: p for p in spec.points} for _, _, spec in config.specs()
        }

    def record(self) -> dict[str, Any]:
        """For ``/status`` and the page: results by state since start, and each writable point
        with its last write (its result), or None."""
        writable = [
            (device, name)
            for device, points in self._points.items()
            for name, spec in points.items()
            if spec.write is not None
        ]
        return {
            "results_total": {state: self.results[state] for state in STATES},
            "writable": [
                {"device": device, "point": name,
                 "last_write": _last(self.last_writes.get(f"{device}/{name}"))}
                for device, name in writable
            ],
        }  # fmt: skip

    # -- commands ----------------------------------------------------------------------------

    def receive(self, payload: bytes) -> list[tuple[int, CommandResult]]:
        """Take one command message; the results to publish again now (a redelivery's)."""
        try:
            command, doc = parse(payload)
            known = self._answers.get(command.id or "")
            if known is not None:
                return self._again(command, known)
            required = self._required or command.op == "config"  # a config is always signed
            authenticate(command, doc, self._keys, required)
            check_time(command, self._now(), self._max_age_s, self._clock_synced())
        except Refusal as refusal:
            if refusal.outcome.reason in _BEFORE_AUTH and self._rates.check(
                "(unauthenticated)", UNAUTHENTICATED_RESULTS, self._monotonic()
            ):
                raise Refused("unanswered", f"{refusal.outcome.reason}, past 60 a minute") from None
            self._finish(_job_of(refusal.command), refusal.command.op, refusal.outcome)
            return []
        job = _job_of(command)
        try:
            if command.op == "config":
                assert command.yaml is not None  # parse refuses a config without one
                self._configs.put_nowait((job, command.yaml))
            else:
                self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._finish(
                job, command.op, Outcome.refused("rate_limited", f"too many {command.op}s waiting")
            )
            return []
        assert command.id is not None  # parse refuses a command without one
        self._remember(command.id, _Answer(command.digest, None, None))
        return []

    def _again(self, command: Command, known: _Answer) -> list[tuple[int, CommandResult]]:
        """A known id: the first result again for the same bytes; else a replay."""
        if known.digest != command.digest:
            replayed = Outcome.refused("replayed", f"id {command.id} was used before")
            self._finish(_job_of(command), command.op, replayed)
            return []
        if known.seq is None or known.result is None:
            return []  # its first result is on its way
        return [(known.seq, known.result)]

    # -- actions -----------------------------------------------------------------------------

    def on_alarm(self, event: AlarmEvent, seq: int | None) -> None:
        """Queue the actions of the alarm's transition (at once, with or without a link)."""
        for rule in self._config.alarms:
            if rule.name != event.alarm:
                continue
            for k, action in enumerate(rule.actions):
                if action.on == event.state:
                    self._act(event.alarm, action.write, f"alarm-{seq or 0}-{k}")

    def _act(self, alarm: str, write: WriteRequest, action_id: str) -> None:
        device, _, point = write.point.partition("/")
        self._enqueue(_Job(action_id, f"alarm:{alarm}", device, point, write.value, None))

    def write_request(self, device: str, point: str, value: Value, by: str) -> None:
        """A write without a signed message (a Sparkplug DCMD, with require_signature false):
        the same checks from authorize on, and a result like any command's."""
        self._writes += 1
        self._enqueue(_Job(f"{by}-{self._writes}", by, device, point, value, None))

    def _enqueue(self, job: _Job) -> None:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._finish(job, "write", Outcome.refused("rate_limited", "too many writes waiting"))

    # -- the writing task --------------------------------------------------------------------

    async def run(self) -> None:
        """Write each queued command or action in turn, and keep the answered ids, until
        cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._save_loop(), name="commands:ids")
            group.create_task(self._config_loop(), name="commands:config")
            while True:
                job = await self._queue.get()
                outcome = await self._write(job)
                self._finish(job, "write", outcome)

    async def _config_loop(self) -> None:
        """Apply each queued config command in turn; its outcome is its one result."""
        while True:
            job, text = await self._configs.get()
            self._finish(job, "config", await self._apply_config(job, text))

    def interrupted_config(self, trial: str, why: str) -> None:
        """The result of a config command whose trial the gateway's stop cut (rolled back at
        start): its sender is still owed one. A trial from the local drop file has none."""
        if ID_PATTERN.match(trial) and not trial.startswith("local-"):
            job = _Job(trial, "", "", "", None, None)
            self._finish(job, "config", Outcome.failed("rolled_back", why))

    async def _apply_config(self, job: _Job, text: bytes) -> Outcome:
        if self._remote is None:
            return Outcome.refused("bad_request", "this gateway takes no config commands")
        try:
            done = await self._remote(text, job.id or "?")
        except Exception as exc:  # a bug must not end the task: the command still gets a result
            log.exception("commands: applying config %s failed", job.id)
            return Outcome("failed", None, None, f"{type(exc).__name__}: {exc}"[:200])
        return Outcome(done.state, done.reason, None, done.detail, tuple(done.problems))

    async def _save_loop(self) -> None:
        while True:
            await self._unsaved_ready.wait()
            self._unsaved_ready.clear()
            rows, self._unsaved = self._unsaved, []
            if self._path is None or not rows:
                continue
            try:
                await asyncio.to_thread(save_answered, self._path, rows, self._now())
            except sqlite3.Error as exc:  # kept in memory; a restart may then write again
                log.warning("commands: cannot keep %d answered ids: %s", len(rows), exc)

    async def _write(self, job: _Job) -> Outcome:
        refusal = authorize(self._points, job.device, job.point, job.value)
        if refusal is not None:
            return refusal
        spec = self._points[job.device][job.point]
        key = f"{job.device}/{job.point}"
        assert spec.write is not None
        # a flood must close the barrier even just after an operator's write: an action counts
        # in the point's rate but is not refused by it
        action = job.by.startswith("alarm:")
        refusal = self._rates.check(key, spec.write.rate, self._monotonic(), exempt=action)
        if refusal is not None:
            return refusal
        assert job.value is not None  # authorize refuses a missing value
        target = self._targets().get(job.device)
        if target is None:
            return Outcome.failed("device_down", f"{job.device} is not running")
        try:
            return await target.write(job.device, job.point, job.value)
        except Exception as exc:  # a bug must not end the task: the command still gets a result
            log.exception("commands: writing %s failed", key)
            return Outcome.failed("device_down", f"{type(exc).__name__}: {exc}"[:200])

    def _finish(self, job: _Job, op: str | None, outcome: Outcome) -> None:
        """The one result: stored (with its seq), remembered, counted, on the timeline."""
        problems = outcome.problems
        if op == "config" and problems is None:  # refused before the config was read
            problems = ()
        result = CommandResult(
            job.id, job.by or None, op, job.device or None, job.point or None, job.value,
            outcome.state, outcome.reason, outcome.read_back, outcome.detail, self._now(),
            job.digest, problems,
        )  # fmt: skip
        seq = self._buffer.put(result)
        if job.id is not None and job.digest is not None:
            known = self._answers.get(job.id)
            if known is None or known.digest == job.digest:  # not a replay's refusal
                self._remember(job.id, _Answer(job.digest, seq, result))
                if seq is not None and (row := command_id_row(seq, result)) is not None:
                    self._unsaved.append(row)
                    self._unsaved_ready.set()
        self.results[outcome.state] += 1
        tried = outcome.state != "refused" or outcome.reason in ("out_of_range", "not_allowed")
        if tried and job.device and job.point:
            self.last_writes[f"{job.device}/{job.point}"] = result
        event = command_event(result)
        level = logging.INFO if outcome.state == "done" else logging.WARNING
        detail = f": {outcome.detail}" if outcome.detail else ""
        value = f" (value {job.value!r})" if op != "config" else ""
        log.log(level, "%s%s%s", event.message, value, detail)
        if self._record is not None:
            self._record(event)

    def _remember(self, command_id: str, answer: _Answer) -> None:
        self._answers[command_id] = answer
        self._answers.move_to_end(command_id)
        while len(self._answers) > REMEMBERED:
            self._answers.popitem(last=False)


def _last(result: CommandResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "ts": result.ts_ms, "id": result.id, "by": result.by, "value": result.value,
        "state": result.state, "reason": result.reason, "read_back": result.read_back,
    }  # fmt: skip


def _job_of(command: Command) -> _Job:
    return _Job(
        command.id, command.by or "", command.device or "", command.point or "",
        command.value, command.digest,
    )  # fmt: skip


def command_event(result: CommandResult) -> StatusEvent:
    """The timeline's ``command`` event (SPEC: id, by, device, point, state, reason)."""
    what = f" on {result.device}/{result.point}" if result.device and result.point else ""
    reason = f" ({result.reason})" if result.reason else ""
    return StatusEvent(
        result.ts_ms,
        "command",
        f"{result.op or 'command'} {result.id or '?'} by {result.by or '?'}{what}: "
        f"{result.state}{reason}",
        {
            "id": result.id,
            "by": result.by,
            "device": result.device,
            "point": result.point,
            "state": result.state,
            "reason": result.reason,
        },
    )


def answered_commands(path: Path, now: int) -> list[CommandIdRow]:
    """The commands answered in the last day, from the buffer's file (read once at start;
    a file without the table, or none yet, has none)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT id, digest, ts_ms, seq, result FROM command_ids WHERE ts_ms > ?"
                " ORDER BY ts_ms DESC LIMIT ?",
                (now - KEEP_IDS_MS, REMEMBERED),
            ).fetchall()
    except sqlite3.Error:
        return []
    return [(str(a), str(b), int(c), int(d), str(e)) for a, b, c, d, e in reversed(rows)]


def save_answered(path: Path, rows: list[CommandIdRow], now: int) -> None:
    """Keep answered ids in the buffer's file (and forget those over a day old)."""
    with contextlib.closing(sqlite3.connect(path, timeout=5.0)) as db, db:
        db.executemany(
            "INSERT OR IGNORE INTO command_ids (id, digest, ts_ms, seq, result) VALUES (?,?,?,?,?)",
            rows,
        )
        db.execute("DELETE FROM command_ids WHERE ts_ms <= ?", (now - KEEP_IDS_MS,))
