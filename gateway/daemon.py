"""The composition root: sources -> alarms -> buffer -> uplink, with status and systemd beside.

Everything runs in one ``asyncio.TaskGroup`` with named tasks. The buffer and the status server
outlive the pipeline (sources and alarm rules), so a SIGHUP reload swaps the pipeline and never
touches the buffer; the uplink is replaced only when its settings changed, so a reload does not
flap the gateway's status to offline. Shutdown follows uvicorn's order: signal -> STOPPING=1 ->
stop polling -> commit in-flight samples -> let the uplink finish the publish in progress
(bounded) -> close the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

from gateway import __version__, eventloop, systemd
from gateway.buffer import Buffer
from gateway.buffer.seals import Sealer
from gateway.clock import SystemClock
from gateway.commands.channel import Commands
from gateway.config import Config, LoadedConfig, load_config
from gateway.errors import ConfigError, GatewayError
from gateway.events import (
    EventDetector,
    Snapshot,
    reload_event,
    reload_refused_event,
    start_event,
    stop_event,
)
from gateway.fleet.apply import RemoteConfigurator, rolled_back_event, watch_drop_file
from gateway.fleet.health import HealthFigures
from gateway.fleet.remote import ConfigSource, RemoteFiles, at_start, choose, state_dir_of
from gateway.fleet.reporter import HealthReporter, health_topic
from gateway.history import History
from gateway.identity import load_identity
from gateway.keys import PublicKey
from gateway.model import BufferStats, DeviceStats, StatusEvent, UplinkStats, Value, now_ms
from gateway.pipeline import Pipeline
from gateway.seals.status import identity_json, identity_status
from gateway.sources.registry import installed
from gateway.status import SourceView, StatusServer, health, link_counters, summary_line
from gateway.supervisor import Supervisor, TaskHealth
from gateway.uplink.catalog import catalog_of
from gateway.uplink.formats import make_uplink
from gateway.uplink.mqtt import Uplink
from gateway.uplink.wire import Outgoing

log = logging.getLogger(__name__)

UPLINK_SHUTDOWN_S = 2.0
HARD_EXIT_AFTER_S = 8.0  # after SIGTERM; systemd's TimeoutStopSec would SIGKILL at 10 s
STATUS_LINE_INTERVAL_S = 10.0  # also how often the watchdog checks the pipeline
EVENTS_INTERVAL_S = 1.0  # how often the figures are compared for the status timeline
INTERRUPTED_TRIAL = "the gateway stopped before it was confirmed; the previous config is in use"


class Daemon:
    """`street-gateway run`: owns the buffer, the status server and the current pipeline."""

    def __init__(self, loaded: LoadedConfig, *, hard_exit_after_s: float | None = None) -> None:
        self.installed = loaded  # the installed file; a valid <state dir>/remote.yaml wins
        self.config_source: ConfigSource = "local"
        self.loaded, self.config_source, self._interrupted_trial = at_start(loaded, installed())
        self.event_loop = "asyncio"  # the running loop's name (eventloop.name_of), set by run()
        self._allowance: tuple[LoadedConfig | None, float] = (None, 0.0)
        self._hard_exit_after_s = hard_exit_after_s
        self._hard_exit: threading.Timer | None = None
        self.started_ms = int(time.time() * 1000)
        self.started_monotonic = time.monotonic()
        self.clock = SystemClock()
        self.supervisor = Supervisor()
        self._wake = asyncio.Event()
        self._stop_requested = False
        self._drain_s = 0.0
        self._reload_requested = False
        self._buffer: Buffer | None = None
        self._pipeline: Pipeline | None = None
        self._uplink: Uplink | None = None
        self._commands: Commands | None = None
        self._history = History()
        self._detector = EventDetector()
        self._event_counts: Counter[str] = Counter()
        self._switch: tuple[LoadedConfig, asyncio.Future[None]] | None = None  # use_config's
        self.remote = RemoteConfigurator(
            installed=lambda: self.installed,
            kinds=installed(),
            current=lambda: (self.loaded, self.config_source),
            use=self.use_config,
            proven=self._proven,
            record=self._record,
        )
        self.health_reporter = HealthReporter(
            self._health_figures,
            self._publish_aside,
            lambda: self.uplink_stats().connected,
            lambda: health_topic(self.config.uplink.topic_prefix, self.config.gateway.id),
            after=lambda doc: self._uplink.health_changed(doc) if self._uplink else None,
        )
        self.identity: PublicKey | None = None

    @property
    def config(self) -> Config:
        return self.loaded.config

    # -- the StatusProvider interface ---------------------------------------------------------

    def gateway_info(self) -> dict[str, Any]:
        return {
            "id": self.config.gateway.id,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started_monotonic, 1),
            "clock_synced": self.clock.synced,
            "labels": dict(self.config.gateway.labels),
            "event_loop": self.event_loop,
            "config_source": self.config_source,
            **identity_status(self.identity, self._buffer),
        }

    def uplink_stats(self) -> UplinkStats:
        return self._uplink.stats if self._uplink else UplinkStats()

    def buffer_stats(self) -> BufferStats:
        return self._buffer.stats if self._buffer else BufferStats()

    def tasks(self) -> list[TaskHealth]:
        return list(self.supervisor.tasks.values())

    def sources(self) -> list[SourceView]:
        if self._pipeline is None:
            return []
        return [
            SourceView(name, kind, [core.stats for core in source.cores], link_counters(source))
            for name, kind, source in self._pipeline.sources
        ]

    def backlog(self) -> int:
        return self.buffer_stats().samples

    def events(self) -> list[StatusEvent]:
        return self._buffer.events() if self._buffer else []

    def commands(self) -> dict[str, Any]:
        if self._commands is None:
            return {"results_total": {}, "writable": []}
        return self._commands.record()

    def event_counts(self) -> Mapping[str, int]:
        return self._event_counts

    def history(self, device: str, now: int) -> dict[str, list[list[Value]]]:
        return self._history.of(device, now)

    # -- running --------------------------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (or request_stop); SIGHUP reloads the config."""
        self.event_loop = eventloop.name_of(asyncio.get_running_loop())
        if not handle_signals:
            await self._run()
            return 0
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self._run()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
        return 0

    def request_stop(self, *, drain_s: float = 0.0) -> None:
        """Stop; with ``drain_s``, first wait (that long at most) for the backlog to go out."""
        self._drain_s = drain_s
        self._stop_requested = True
        self._wake.set()
        if self._hard_exit_after_s is not None and self._hard_exit is None:
            # Last resort: library code that swallows a cancellation must not hang a shutdown.
            self._hard_exit = threading.Timer(self._hard_exit_after_s, _hard_exit)
            self._hard_exit.daemon = True
            self._hard_exit.start()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    async def _run(self) -> None:
        config = self.config
        buffer_config = config.buffer
        assert buffer_config.path is not None  # load_config resolves it
        host, port = self.loaded.status_host_port
        sealer = self._sealer()
        async with (
            Buffer(
                buffer_config.path,
                max_size=buffer_config.max_size,
                max_age_s=buffer_config.max_age,
                sync=buffer_config.sync,
                supervisor=self.supervisor,
                sealer=sealer,
            ) as buffer,
            _status_server(self, host, port, self.loaded.status_token) as status,
        ):
            self._buffer = buffer
            self._detector = EventDetector.after(buffer.events())
            self._record(start_event(now_ms(), __version__, buffer.previous_run))
            if self._interrupted_trial is not None:
                self._record(rolled_back_event(self._interrupted_trial, INTERRUPTED_TRIAL))
            log.info(
                "street-gateway %s started as %s: buffer %s, status http://%s:%d/, event loop %s",
                __version__,
                config.gateway.id,
                buffer_config.path,
                host,
                status.port,
                self.event_loop,
            )
            self._commands = commands = Commands(
                config,
                buffer,
                targets=lambda: self._pipeline.write_targets() if self._pipeline else {},
                clock_synced=lambda: self.clock.synced,  # STREET_GATEWAY_CLOCK overrides it
                record_event=self._record,
                remote=self.remote.apply,  # the signed config command (docs/fleet.md)
                path=buffer.path,  # the answered commands' ids, kept across restarts
            )
            if self._interrupted_trial is not None:
                commands.interrupted_config(self._interrupted_trial, INTERRUPTED_TRIAL)
            async with asyncio.TaskGroup() as group:
                watch = group.create_task(
                    self.supervisor.run("watchdog", self._watch), name="watchdog"
                )
                writes = group.create_task(
                    self.supervisor.run("commands", commands.run), name="commands"
                )
                events = group.create_task(
                    self.supervisor.run("events", self._watch_events, essential=False),
                    name="events",
                )
                health_task = group.create_task(
                    self.supervisor.run("health", self.health_reporter.run, essential=False),
                    name="health",
                )
                remote_task = group.create_task(
                    self.supervisor.run("remote", self._watch_remote_drop, essential=False),
                    name="remote",
                )
                uplink = self._start_uplink(group)
                while True:
                    self._pipeline = Pipeline(
                        self.config,
                        buffer,
                        self.clock,
                        self.supervisor,
                        installed(),
                        history=self._history,
                        record_event=self._record,
                        on_alarm=commands.on_alarm,
                    )
                    sources = group.create_task(self._pipeline.run_sources(), name="sources")
                    systemd.ready(self.status_line())  # one datagram: READY with its STATUS
                    next_loaded = await self._next_config()
                    if next_loaded is None:
                        break
                    systemd.notify(RELOADING=1)
                    await _cancel(sources)
                    uplink = await self._reload_uplink(next_loaded, uplink, group)
                    self.loaded = next_loaded
                    commands.configure(next_loaded.config)
                    status.use_token(next_loaded.status_token)  # a rotated token file
                    summary = _summary(next_loaded.config)
                    log.info("reloaded %s: %s", next_loaded.path, summary)
                    self._record(reload_event(now_ms(), str(next_loaded.path), summary))
                    self._history.forget({name for _, name in next_loaded.config.devices()})
                    if self._switch is not None:  # use_config's: applied now
                        self._switch[1].set_result(None)
                        self._switch = None
                await self._shut_down(sources, uplink)
                writes.cancel()
                watch.cancel()
                events.cancel()
                health_task.cancel()
                remote_task.cancel()
            log.info("stopped: buffer closed with %d items waiting", buffer.stats.samples)

    def _sealer(self) -> Sealer | None:
        """The identity key (made when missing); None when seals are off. Raises IdentityError."""
        security = self.config.security
        assert security.identity_key is not None  # load_config resolves it
        key, where, created = load_identity(security.identity_key)
        self.identity = key.public
        if created:
            log.info("made the identity key %s: %s", where, key.public.fingerprint)
        if security.seal_interval <= 0:
            return None
        return Sealer(self.config.gateway.id, key, security.seal_interval)

    def _identity(self) -> dict[str, str] | None:
        return None if self.identity is None else identity_json(self.identity)

    def _start_uplink(self, group: asyncio.TaskGroup) -> asyncio.Task[None]:
        assert self._buffer is not None
        self._uplink = make_uplink(
            self.loaded,
            buffer=self._buffer,
            buffer_path=self._buffer.path,
            started_ms=self.started_ms,
            current_values=self._current_values,
            clock_synced=lambda: self.clock.synced,
            commands=self._commands,
            device_states=lambda: {d.name: d.state for d in self._devices()},
            config_source=self.config_source,
            identity=self._identity(),
        )
        return group.create_task(self.supervisor.run("uplink", self._uplink.run), name="uplink")

    async def _reload_uplink(
        self, loaded: LoadedConfig, task: asyncio.Task[None], group: asyncio.TaskGroup
    ) -> asyncio.Task[None]:
        """Keep the link when the new config talks to the broker the same way (no status flap);
        otherwise finish the publish in progress and connect afresh."""
        assert self._uplink is not None
        config = loaded.config
        # the command channel's subscription is made with the link: a change of it is a new link
        same_commands = (config.commands is None) == (self.config.commands is None)
        if same_commands and self._uplink.same_link(
            config.uplink,
            gateway_id=config.gateway.id,
            client_id=config.client_id,
            password=loaded.mqtt_password,
        ):
            await self._uplink.reconfigure(
                catalog_of(config, loaded.digest, self.config_source, self._identity())
            )
            return task
        await self._stop_uplink(task)
        self.loaded = loaded
        return self._start_uplink(group)

    async def _next_config(self) -> LoadedConfig | None:
        """Wait for SIGTERM (None) or a SIGHUP whose new config is valid (that config)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stop_requested:
                return None
            if self._switch is not None:
                return self._switch[0]
            if self._reload_requested:
                self._reload_requested = False
                loaded = self._load_new_config()
                if loaded is not None:
                    return loaded

    async def _shut_down(self, sources: asyncio.Task[None], uplink: asyncio.Task[None]) -> None:
        """In order: STOPPING=1, stop polling, commit, finish the publish in progress."""
        systemd.stopping()
        log.info("stopping: polling stopped, committing and finishing the publish in progress")
        await _cancel(sources)
        assert self._buffer is not None
        self._detect_events()
        self._record(stop_event(now_ms()))  # committed by the flush below
        try:
            async with asyncio.timeout(1.0):
                await self._buffer.flush()
        except TimeoutError:
            log.warning("could not commit the last samples within 1 s; they stay queued")
        if self._drain_s:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._drain_s):
                    while self.backlog():  # noqa: ASYNC110 - the backlog is a figure, not an event
                        await asyncio.sleep(0.05)
        await self._stop_uplink(uplink)

    async def _stop_uplink(self, task: asyncio.Task[None]) -> None:
        assert self._uplink is not None
        try:
            async with asyncio.timeout(UPLINK_SHUTDOWN_S + 0.5):
                await self._uplink.shutdown(UPLINK_SHUTDOWN_S)
        except TimeoutError:
            log.warning("uplink did not finish in time; unacknowledged samples stay buffered")
        await _cancel(task)

    def _load_new_config(self) -> LoadedConfig | None:
        problems: list[str] = []
        try:
            self.installed = load_config(self.installed.path, installed())
            # a valid remote.yaml still wins; a trial in progress is not interrupted
            files = RemoteFiles(state_dir_of(self.installed))
            loaded, self.config_source = choose(self.installed, files, installed())
        except ConfigError as exc:
            problems = exc.problems
        if problems:
            log.error("reload refused, the running config stays:\n  %s", "\n  ".join(problems))
            self._record(reload_refused_event(now_ms(), problems))
            return None
        if loaded.config.buffer != self.config.buffer:
            log.warning("reload: buffer settings change only on restart; the buffer is untouched")
        if loaded.config.status.listen != self.config.status.listen:
            log.warning("reload: status.listen changes only on restart")
        return loaded

    async def _watch(self) -> None:
        """Ping the systemd watchdog only while the buffer commits and the devices get polled.

        The buffer proves itself by completing a flush (its commit path and database thread
        answer); the sources by their devices' poll counters moving. A wedged stage stops the
        pings, so systemd restarts the service. STATUS= is kept current on the way.
        """
        watchdog = systemd.Watchdog()
        period = min(watchdog.period_s, STATUS_LINE_INTERVAL_S)
        buffer_beat = watchdog.register("buffer", allowance_s=max(30.0, 4 * period))
        sources_beat = watchdog.register("sources", allowance_s=self._polling_allowance())
        last_polls = -1
        while True:
            assert self._buffer is not None
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that
            # arrives as the flush completes, and this loop would then outlive the shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._buffer.ping()
                buffer_beat.beat()
            polls = sum(d.reads_ok + d.reads_failed + d.parse_errors for d in self._devices())
            if polls != last_polls:
                sources_beat.beat()
                last_polls = polls
            sources_beat.allowance_s = self._polling_allowance()
            if not self.supervisor.down():  # a dead essential task starves the watchdog
                watchdog.tick()
            systemd.status(self.status_line())
            await asyncio.sleep(period)

    def _devices(self) -> list[DeviceStats]:
        return self._pipeline.devices() if self._pipeline else []

    # -- events for the status timeline ----------------------------------------------------------

    def _record(self, event: StatusEvent) -> None:
        """Keep an event: in the buffer (committed with the next data commit) and counted."""
        assert self._buffer is not None
        self._buffer.record_event(event)
        self._event_counts[event.kind] += 1
        log.debug("event %s: %s", event.kind, event.message)

    def _detect_events(self) -> None:
        snapshot = Snapshot.of(
            now_ms(),
            uplink=self.uplink_stats(),
            buffer=self.buffer_stats(),
            clock_synced=self.clock.synced,
            devices=self._devices(),
            tasks=self.tasks(),
        )
        for event in self._detector.observe(snapshot):
            self._record(event)

    async def _watch_events(self) -> None:
        """Compare the figures about once a second: one event per change of state."""
        while True:
            self._detect_events()
            await asyncio.sleep(EVENTS_INTERVAL_S)

    # -- health upstream (gateway/fleet) -------------------------------------------------------

    def _health_figures(self) -> HealthFigures:
        healthy, problems = health(self)
        uplink, buffer = self.uplink_stats(), self.buffer_stats()
        return HealthFigures(
            ts_ms=now_ms(),
            healthy=healthy,
            problems=problems,
            devices={d.name: d.state for d in self._devices()},
            backlog=self.backlog(),
            buffer_bytes=buffer.bytes,
            room_bytes=buffer.room_bytes,
            bytes_per_hour=uplink.bytes_per_hour,
            version=__version__,
            config_digest=self.loaded.digest,
            config_source=self.config_source,
            uptime_s=time.monotonic() - self.started_monotonic,
        )

    async def _publish_aside(self, message: Outgoing) -> bool:
        return await self._uplink.publish_aside(message) if self._uplink else False

    # -- remote configuration (gateway/fleet) ---------------------------------------------------

    async def use_config(self, loaded: LoadedConfig, source: ConfigSource) -> None:
        """Run ``loaded`` from now on, as a reload does; returns once it is applied."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.config_source = source
        self._switch = (loaded, done)
        self._wake.set()
        await done

    async def _proven(self, within_s: float) -> str | None:
        """None once the uplink is connected with the running config and a health message
        has been acknowledged since; else why not, after ``within_s``."""
        reporter = self.health_reporter
        reporter.schedule.new_connection()  # the next health goes as soon as the gap allows
        try:
            async with asyncio.timeout(within_s):
                while True:
                    await reporter.wait_published()
                    if self.uplink_stats().connected:
                        return None
        except TimeoutError:
            uplink = self.uplink_stats()
            last = f" (last error: {uplink.last_error})" if uplink.last_error else ""
            return (
                f"the uplink did not connect and publish health within {within_s:g}s "
                f"of the new config{last}"
            )

    async def _watch_remote_drop(self) -> None:
        await watch_drop_file(state_dir_of(self.installed), self.remote)

    def _current_values(self) -> dict[str, dict[str, Value]]:
        """Each device's last values, for births that carry them (Sparkplug's DBIRTH)."""
        return {d.name: dict(d.last_values) for d in self._devices()}

    def _polling_allowance(self) -> float:
        """Long enough that even a down device (polled once per backoff period) shows a poll.
        Worked out once per config: building every device's specs takes ~1 ms."""
        loaded = self.loaded
        if self._allowance[0] is not loaded:
            slowest = 0.0
            for _, source, spec in loaded.config.specs():
                slowest = max(slowest, spec.interval_s, source.backoff_max)
            self._allowance = (loaded, 3 * slowest + 30.0)
        return self._allowance[1]

    def status_line(self) -> str:
        return summary_line(self)


def _hard_exit() -> None:
    log.critical("shutdown did not finish in time: exiting hard (committed samples are safe)")
    logging.shutdown()
    os._exit(1)


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel a task and wait for it, keeping the waiter's own cancellation intact."""
    task.cancel()
    await asyncio.wait({task})


def _summary(config: Config) -> str:
    devices = sum(1 for _ in config.devices())
    return f"{len(config.sources)} sources, {devices} devices, {len(config.alarms)} alarms"


@contextlib.asynccontextmanager
async def _status_server(
    daemon: Daemon, host: str, port: int, token: str | None
) -> AsyncIterator[StatusServer]:
    """The status server, with a one-line reason when its address is taken."""
    server = StatusServer(daemon, host=host, port=port, token=token)
    try:
        await server.__aenter__()
    except OSError as exc:
        raise GatewayError(
            f"status.listen {host}:{port}: {exc.strerror or exc} (is another street-gateway "
            "running, or another service on that port?)"
        ) from exc
    try:
        yield server
    finally:
        await server.__aexit__(None, None, None)


def run_daemon(loaded: LoadedConfig) -> int:
    """Run until SIGTERM/SIGINT; 0 after a clean shutdown, 1 after a fatal runtime error."""
    try:
        loop = eventloop.choose()
        if loop.why:
            log.info("event loop: asyncio (%s)", loop.why)
        with asyncio.Runner(loop_factory=loop.factory) as runner:
            return runner.run(Daemon(loaded, hard_exit_after_s=HARD_EXIT_AFTER_S).run())
    except GatewayError as exc:
        log.error("cannot run: %s", exc)  # noqa: TRY400 - a known cause needs no traceback
        return 1
    except Exception:
        log.exception("fatal error")
        return 1
