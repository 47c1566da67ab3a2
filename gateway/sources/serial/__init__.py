"""The ``serial`` source kind, an ASCII sensor on a serial line: see README.md.

The ``street_gateway.sources`` entry point names ``SERIAL``; importing this module loads only
the config model.
"""

from __future__ import annotations

from typing import Any

from gateway.model import SampleSink
from gateway.sources.registry import RunningSource, SourceKind
from gateway.sources.serial.config import SerialSource


def _make(config: Any, sink: SampleSink) -> RunningSource:
    from gateway.sources.serial.source import SerialSensorSource  # noqa: PLC0415 - on use only

    return SerialSensorSource(config, sink)


def _probe(probes: Any) -> None:
    from gateway.sources.serial import probe  # noqa: PLC0415

    probe.register(probes)


def _simulate(argv: list[str]) -> int:
    from gateway.sources.serial import sim  # noqa: PLC0415

    return sim.main(argv)


SERIAL = SourceKind("serial", SerialSource, _make, _probe, ("serial", _simulate))
