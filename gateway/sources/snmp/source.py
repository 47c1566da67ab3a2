"""The running ``snmp`` source: one agent, polled with as few GETs as it allows.

Every point goes in one GET at first; an agent that answers ``tooBig`` gets the batch halved
(remembered, said once in the log and in ``/status``'s ``read_mode``) until the answer fits. A
point the agent does not have (``noSuchObject``/``noSuchInstance``, or a v1-style
``noSuchName``) or whose value does not fit its type is a parse error of that point: it is left
out of the sample and counted (``parse_errors``), logged when its reason changes, and the other
points are still sent. A timeout, a refused key or a malformed answer fails the poll, which the
device core counts, retries and backs off.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from gateway.errors import ParseError
from gateway.model import SampleSink, Value
from gateway.sources.device import Device, PolledSource
from gateway.sources.snmp.client import AgentRefused, Credentials, SnmpClient
from gateway.sources.snmp.config import SnmpPoint, SnmpSource
from gateway.sources.snmp.values import convert

log = logging.getLogger(__name__)


class SnmpPollSource(PolledSource):
    def __init__(self, config: SnmpSource, sink: SampleSink) -> None:
        super().__init__(config, sink)
        self.snmp = config
        credentials = Credentials.of(config)  # the key files are read at start, like secrets
        self._client = SnmpClient(config.host, config.port, credentials, config.timeout)
        self._per_get = len(config.points)  # varbinds per GET; halved on tooBig
        self._failing: dict[str, str] = {}  # point -> why it is left out, while it lasts

    async def close(self) -> None:
        self._client.close()

    async def poll(self, device: Device) -> Mapping[str, Value]:
        values: dict[str, Value] = {}
        errors: dict[str, str] = {}
        pending = list(self.snmp.points)
        while pending:
            batch = pending[: self._per_get]
            device.stats.requests_total += 1
            try:
                answer = await self._client.get([p.dotted for p in batch])
            except AgentRefused as exc:
                if exc.name == "tooBig" and len(batch) > 1:
                    self._halve(device, len(batch))
                    continue
                # one OID whose value alone is too big, or that a v1-style agent does not have
                single = batch[0] if exc.name == "tooBig" else None
                if exc.name == "noSuchName" and exc.index is not None:
                    single = batch[exc.index]
                if single is not None:
                    errors[single.name] = f"the agent answered {exc.name}"
                    pending.remove(single)
                    continue
                raise
            del pending[: len(batch)]
            self._convert(batch, answer, values, errors)
        self._note(device, errors)
        return values

    @staticmethod
    def _convert(
        batch: list[SnmpPoint],
        answer: list[tuple[str, object]],
        values: dict[str, Value],
        errors: dict[str, str],
    ) -> None:
        for point, (oid, value) in zip(batch, answer, strict=True):
            if oid != point.dotted:
                errors[point.name] = f"the agent answered for {oid}, not {point.dotted}"
                continue
            try:
                values[point.name] = convert(point.type, point.scale, value)
            except ParseError as exc:
                errors[point.name] = str(exc)

    def _halve(self, device: Device, size: int) -> None:
        """The agent cannot answer ``size`` varbinds in one message: ask for half as many."""
        self._per_get = (size + 1) // 2
        gets = -(-len(self.snmp.points) // self._per_get)
        log.warning(
            "%s: the agent answered tooBig to a GET of %d OIDs; asking for %d at a time",
            device.label,
            size,
            self._per_get,
        )
        device.stats.read_mode = (
            f"in {gets} GETs a poll of at most {self._per_get} OIDs: "
            f"the agent answered tooBig to {size}"
        )

    def _note(self, device: Device, errors: dict[str, str]) -> None:
        """Count the points left out; log each when its reason changes, and its return."""
        device.stats.parse_errors += len(errors)
        for name, why in errors.items():
            if self._failing.get(name) != why:
                log.warning("%s: point %s left out: %s", device.label, name, why)
        for name in self._failing.keys() - errors.keys():
            log.info("%s: point %s read again", device.label, name)
        self._failing = errors
