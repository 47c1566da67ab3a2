"""The ``sdi12`` source kind, SDI-12 sensors behind a serial SDI-12 interface: see README.md.

The ``street_gateway.sources`` entry point names ``SDI12``; importing this module loads only
the config model.
"""

from __future__ import annotations

from typing import Any

from gateway.model import SampleSink
from gateway.sources.plugin import RunningSource, SourceKind
from gateway.sources.sdi12.config import Sdi12Source


def _make(config: Any, sink: SampleSink) -> RunningSource:
    from gateway.sources.sdi12.source import Sdi12SensorSource  # noqa: PLC0415 - on use only

    return Sdi12SensorSource(config, sink)


def _probe(probes: Any) -> None:
    from gateway.sources.sdi12 import probe  # noqa: PLC0415

    probe.register(probes)


def _simulate(argv: list[str]) -> int:
    from gateway.sources.sdi12 import sim  # noqa: PLC0415

    return sim.main(argv)


SDI12 = SourceKind("sdi12", Sdi12Source, _make, _probe, ("sdi12", _simulate))
