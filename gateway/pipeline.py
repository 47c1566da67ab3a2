"""What a reload replaces: the sources and the alarm rules of one config, and the sink every
source hands its samples to (alarms, report by exception, history, the buffer).

The daemon (the composition root) makes one per config; a SIGHUP reload makes a new one on the
same buffer, so raised alarms and their ``while_raised`` overrides resume.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gateway.alarms import AlarmEngine
from gateway.buffer import Buffer
from gateway.clock import SystemClock
from gateway.config import Config
from gateway.events import alarm_event
from gateway.history import History
from gateway.model import AlarmEvent, DeviceStats, Sample, StatusEvent
from gateway.report import ReportFilter, rules_for
from gateway.sources.device import Device
from gateway.sources.registry import Registry, RunningSource, installed
from gateway.supervisor import Supervisor

log = logging.getLogger(__name__)


class Pipeline:
    """What a reload replaces: the sources and the alarm rules of one config."""

    def __init__(
        self,
        config: Config,
        buffer: Buffer,
        clock: SystemClock,
        supervisor: Supervisor,
        kinds: Registry | None = None,
        *,
        history: History | None = None,
        record_event: Callable[[StatusEvent], None] | None = None,
        on_alarm: Callable[[AlarmEvent, int | None], None] | None = None,
    ) -> None:
        kinds = kinds or installed()
        self.buffer = buffer
        self.clock = clock
        self.supervisor = supervisor
        self.history = history or History()
        self.record_event = record_event or buffer.record_event
        self.on_alarm = on_alarm  # an alarm's actions (the command channel), with its seq
        # starts from the alarms raised before a restart or reload: their overrides resume
        self.alarms = AlarmEngine(config.alarms, raised=buffer.raised_alarms())
        self.sources: list[tuple[str, str, RunningSource]] = [
            (s.name, s.kind, kinds.make(s, self.accept)) for s in config.sources
        ]
        self.cores: dict[str, Device] = {
            core.name: core for _, _, source in self.sources for core in source.cores
        }
        # report by exception, for the devices that have `report` (alarms see every value)
        self._reports: dict[str, ReportFilter] = {}
        for _, _, spec in config.specs():
            rules = rules_for(spec)
            if rules:
                self._reports[spec.name] = ReportFilter(rules)
        self._apply_overrides(resumed=True)

    def accept(self, sample: Sample) -> None:
        """The sink every source calls with a poll's sample: flag unsynced time, keep its
        values for the page's sparklines, keep what report by exception sends (a sample left
        with no value is not stored and takes no seq), then run the alarm rules on every value
        of the poll."""
        if not self.clock.synced:
            sample = sample._replace(clock_synced=False)
        self.history.observe(sample)
        report = self._reports.get(sample.device)
        if report is None:
            self.buffer.put(sample)
        else:
            # judged on the samples' own time, as the alarms' hold is
            values = report(sample.values, sample.ts_ms / 1000)
            if values:
                self.buffer.put(sample._replace(values=values))
        events = self.alarms.observe(sample)
        for event in events:
            log.warning(
                "alarm %s %s (value %s, priority %s)",
                event.alarm,
                event.state,
                event.value,
                event.priority,
            )
            seq = self.buffer.put(event)
            self.record_event(alarm_event(event))
            if self.on_alarm is not None:  # its actions run at once, link or no link
                self.on_alarm(event, seq)
        if events:
            self._apply_overrides()

    def _apply_overrides(self, *, resumed: bool = False) -> None:
        """Poll the devices that raised alarms' ``while_raised`` name at their interval, and
        the others at their own; each switch is logged once."""
        wanted = self.alarms.overrides()
        for name, core in self.cores.items():
            want = wanted.get(name)
            have = core.override
            if want is None and have is not None:
                core.override_interval(None)
                log.info(
                    "%s: polled every %gs again (%s)",
                    name,
                    core.interval_s,
                    have[1].replace("while alarm", "alarm").replace("is raised", "cleared"),
                )
            elif want is not None and (have is None or have[0] != want[0]):
                reason = f"while alarm {want[1]} is raised"
                core.override_interval(want[0], reason)
                log.warning(
                    "%s: polled every %gs %s (its interval is %gs)%s",
                    name,
                    want[0],
                    reason,
                    core.configured_interval_s,
                    "; resumed, it was raised before this start" if resumed else "",
                )

    async def run_sources(self) -> None:
        async with asyncio.TaskGroup() as group:
            for name, _, source in self.sources:
                group.create_task(
                    self.supervisor.run(f"source:{name}", source.run), name=f"source:{name}"
                )

    def devices(self) -> list[DeviceStats]:
        return [core.stats for core in self.cores.values()]

    def write_targets(self) -> dict[str, Any]:
        """Device name -> its running source, for the sources that can write (since v0.3)."""
        return {
            core.name: source
            for _, _, source in self.sources
            if hasattr(source, "write")
            for core in source.cores
        }
