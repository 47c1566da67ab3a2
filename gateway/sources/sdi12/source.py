"""SDI-12 sensors behind a serial SDI-12 interface, as a source of samples.

One port, one lock: one transaction on the bus at a time. Each device polls on its own
schedule (the shared core's, ``sources/device.py``) in a task of its own, so a sensor that
never answers costs the others only the time it holds the lock. A poll follows the standard's
sequence (:mod:`gateway.sources.sdi12.protocol`):

* ``M`` (and M1..M9): ``aM!`` → ``atttn``, then the service request ``a`` (or ttt seconds, plus
  ``timeout`` for the adapter to relay it), then ``aD0!``, ``aD1!``, ... until all n values are
  in. The lock is held throughout: any command on the bus would abort the measurement.
* ``C`` (and C1..C9): ``aC!`` → ``atttnn``; the lock is let go for the ttt seconds (the sensor
  sends no service request), so the other sensors' commands, and their own C measurements,
  run meanwhile; then ``aD0!``... under the lock again.

Each command gets ``timeout`` and ``retries`` (``retries + 1`` tries, one while the device is
down). An answer is refused, counted in ``parse_errors`` and logged once per run of refusals,
when its CRC is wrong, its shape is not the command's, it is too long or truncated, or it comes
from another address: such a line is counted on the device that owns its address (a late
answer) or, for an address nobody owns, on the device being polled, and the wait goes on. A
port that cannot be opened or goes away makes every device ``down``; it is reopened with
doubling delays up to ``backoff_max``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from gateway.errors import DeviceError, DeviceProtocolError, DeviceTimeout
from gateway.model import Sample, SampleSink, Value, now_ms
from gateway.sources.device import Device, StopPolling, run_schedule
from gateway.sources.sdi12 import protocol
from gateway.sources.sdi12.config import Sdi12Device, Sdi12Source
from gateway.sources.sdi12.port import PortClosed, Sdi12Port, open_port
from gateway.sources.sdi12.protocol import Announced, Collected, Reason, Refused

log = logging.getLogger("gateway.sources.sdi12")

# Refusals are logged once; their end after this many good polls with none, so a sensor that
# garbles every fifth answer gives one warning, not two log lines per five polls.
CLEAN_AFTER = 5
REOPEN_FIRST = 0.5  # seconds before the first reopen of a lost port, doubled up to backoff_max
T = TypeVar("T")


class Sdi12SensorSource:
    """Polls the SDI-12 sensors of one interface and hands each measurement to ``sink``."""

    def __init__(self, config: Sdi12Source, sink: SampleSink) -> None:
        self._config = config
        self._sink = sink
        self._devices = {d.name: d for d in config.devices}
        self.cores = [
            Device.of(spec, config, label=f"{spec.name} (address {device.address})", logger=log)
            for spec, device in zip(config.device_specs(), config.devices, strict=True)
        ]
        pairs = zip(config.devices, self.cores, strict=True)
        self._by_address = {device.address: core for device, core in pairs}
        self._lock = asyncio.Lock()
        self._refusing: set[str] = set()  # devices whose refusals were logged
        self._clean_polls: dict[str, int] = {}  # good polls since a device's last refusal
        self._last_refused: dict[str, Refused] = {}

    async def run(self) -> None:
        """Poll until cancelled; device and port errors only change the devices' states."""
        config = self._config
        delay = min(REOPEN_FIRST, config.backoff_max)
        while True:
            try:
                port = await open_port(
                    config.port,
                    baudrate=config.baudrate,
                    parity=config.parity,
                    stopbits=config.stopbits,
                    bytesize=config.bytesize,
                    open_timeout=max(config.timeout, 1.0),
                )
            except DeviceError as exc:
                self._all_down(str(exc))
            else:
                good_before = self._reads_ok()
                try:
                    await self._session(port)
                except PortClosed as exc:
                    self._all_down(f"port lost: {exc}")
                finally:
                    await port.aclose()
                if self._reads_ok() > good_before:
                    delay = min(REOPEN_FIRST, config.backoff_max)
            await asyncio.sleep(delay)
            delay = min(delay * 2, config.backoff_max)

    def _reads_ok(self) -> int:
        return sum(core.stats.reads_ok for core in self.cores)

    def _all_down(self, error: str) -> None:
        for core in self.cores:
            core.degrade("down", error)

    async def _session(self, port: Sdi12Port) -> None:
        """One task per device on the open port, until the port goes away (PortClosed)."""
        lost: list[PortClosed] = []

        async def poll(core: Device) -> None:
            try:
                await self._poll(port, core)
            except PortClosed as exc:
                lost.append(exc)
                raise StopPolling from exc

        try:
            async with asyncio.TaskGroup() as tasks:
                for core in self.cores:
                    tasks.create_task(
                        run_schedule([core], poll, logger=log), name=f"sdi12-{core.name}"
                    )
        except* StopPolling:
            raise lost[0] from None

    # -- one poll ------------------------------------------------------------------------------

    async def _poll(self, port: Sdi12Port, core: Device) -> None:
        device = self._devices[core.name]
        tries = core.attempts(self._config.retries)
        if protocol.concurrent(device.measure):
            async with self._lock:
                started, announced = await self._start(port, core, device, tries)
            await asyncio.sleep(announced.seconds)  # the bus is free for the others meanwhile
            async with self._lock:
                values = await self._collect(port, core, device, announced, tries)
        else:
            async with self._lock:
                started, announced = await self._start(port, core, device, tries)
                await self._wait_ready(port, core, device, announced)
                values = await self._collect(port, core, device, announced, tries)
        sample = self._values(device, values)
        core.stats.last_values.update(sample)
        self._sink(Sample(core.name, started, sample))
        self._accepted(core)
        core.succeeded(started)

    async def _start(
        self, port: Sdi12Port, core: Device, device: Sdi12Device, tries: int
    ) -> tuple[int, Announced]:
        command = protocol.start(device.address, device.measure, device.crc)
        started = now_ms()
        announced = await self._ask(
            port,
            core,
            command,
            lambda answer: protocol.parse_announced(answer, device.address, device.measure),
            tries,
        )
        if announced.count == 0:
            raise DeviceProtocolError(f"{command} announced no values")
        return started, announced

    async def _wait_ready(
        self, port: Sdi12Port, core: Device, device: Sdi12Device, announced: Announced
    ) -> None:
        """The service request, or ttt seconds (plus ``timeout`` for the adapter to relay it)."""
        if announced.seconds == 0:
            return
        try:
            async with asyncio.timeout(announced.seconds + self._config.timeout):
                while True:
                    answer = protocol.decode(await port.get())
                    if isinstance(answer, Refused):
                        self._refuse(core, answer)
                    elif protocol.parse_service_request(answer, device.address):
                        return
                    elif answer and not answer.endswith("!"):  # an adapter's echo is no answer
                        self._stray(core, answer)
        except TimeoutError:
            log.debug("%s: no service request; reading the values anyway", core.label)

    async def _collect(
        self,
        port: Sdi12Port,
        core: Device,
        device: Sdi12Device,
        announced: Announced,
        tries: int,
    ) -> list[float]:
        collected = Collected(announced)
        while not collected.complete:
            command = protocol.send_data(device.address, collected.next_index)

            def take(answer: str, command: str = command) -> list[float] | Refused:
                values = protocol.parse_data(
                    answer, device.address, crc=device.crc, measure=device.measure
                )
                if isinstance(values, Refused):
                    return values
                outcome = collected.add(values)
                if isinstance(outcome, str):
                    raise DeviceProtocolError(outcome)
                return outcome or values

            await self._ask(port, core, command, take, tries)
        return collected.values

    def _values(self, device: Sdi12Device, values: list[float]) -> dict[str, Value]:
        missing = [p for p in device.points if p.index >= len(values)]
        if missing:
            names = ", ".join(f"{p.name} (index {p.index})" for p in missing)
            raise DeviceProtocolError(f"the sensor gave {len(values)} values; no value for {names}")
        return {p.name: values[p.index] for p in device.points}

    # -- one command ---------------------------------------------------------------------------

    async def _ask(
        self,
        port: Sdi12Port,
        core: Device,
        command: str,
        parse: Callable[[str], T | Refused],
        tries: int,
    ) -> T:
        """Send ``command`` and parse its answer, up to ``tries`` times; raises DeviceError."""
        timeout = self._config.timeout
        error: DeviceError = DeviceTimeout(f"no answer to {command}")
        for _ in range(tries):
            for stale in port.drain():  # answers that came after their command's timeout
                self._unsolicited(core, stale, "late")
            for rest in port.take_unfinished():
                self._unsolicited(core, rest, "truncated")
            port.write(command + self._config.command_end)
            core.stats.requests_total += 1
            refusals = core.stats.parse_errors
            try:
                async with asyncio.timeout(timeout):
                    answer = await self._answer(port, core, command)
            except TimeoutError:
                for rest in port.take_unfinished():
                    self._unsolicited(core, rest, "truncated")
                refused = self._last_refused.get(core.name)
                why = f" ({refused})" if core.stats.parse_errors > refusals else ""
                error = DeviceTimeout(f"no answer to {command} within {timeout:g}s{why}")
                continue
            result = answer if isinstance(answer, Refused) else parse(answer)
            if not isinstance(result, Refused):
                return result
            self._refuse(core, result)
            error = DeviceProtocolError(f"{command}: {result}")
        raise error

    async def _answer(self, port: Sdi12Port, core: Device, command: str) -> str | Refused:
        """The next line from ``core``'s address; other addresses' lines are counted and
        skipped, and so are the adapter's echo of a command and blank lines."""
        address = command[0]
        while True:
            answer = protocol.decode(await port.get())
            if isinstance(answer, Refused):
                return answer
            if not answer or answer.endswith("!"):  # no SDI-12 answer ends with "!"
                continue
            if protocol.address_of(answer) == address:
                return answer
            self._stray(core, answer)

    # -- refusals ------------------------------------------------------------------------------

    def _unsolicited(self, core: Device, raw: bytes, reason: Reason) -> Refused | None:
        """A line nobody waited for (blank lines and the adapter's echoes aside): counted."""
        answer = protocol.decode(raw)
        if isinstance(answer, Refused):
            self._refuse(core, answer)
            return answer
        if not answer or answer.endswith("!"):
            return None
        return self._stray(core, answer, reason)

    def _stray(self, core: Device, answer: str, reason: Reason = "late") -> Refused:
        """An answer that is not the one awaited: counted against its sender when the sender
        is one of this bus's devices, else against the device being polled."""
        sender = self._by_address.get(protocol.address_of(answer) or "")
        if sender is None:
            refused = Refused(
                "wrong_address", f"answer {answer!r} from no known address ({core.label} was asked)"
            )
            sender = core
        else:
            refused = Refused(reason, f"{answer!r}")
        self._refuse(sender, refused)
        return refused

    def _refuse(self, core: Device, refused: Refused) -> None:
        core.stats.parse_errors += 1
        self._last_refused[core.name] = refused
        self._clean_polls[core.name] = 0
        if core.name not in self._refusing:
            self._refusing.add(core.name)
            log.warning("%s: refusing answers: %s", core.label, refused)
        else:
            log.debug("%s: refused: %s", core.label, refused)

    def _accepted(self, core: Device) -> None:
        """A good poll: after CLEAN_AFTER good polls with no refusal, refusals are news again."""
        if core.name not in self._refusing:
            return
        clean = self._clean_polls[core.name] = self._clean_polls.get(core.name, 0) + 1
        if clean >= CLEAN_AFTER:
            self._refusing.discard(core.name)
            log.info("%s: answers are clean again", core.label)
