"""The ``particulate`` source kind, an optical dust sensor (SDS011, PMS5003): see README.md.

The ``street_gateway.sources`` entry point names ``PARTICULATE``; importing this module loads
only the config model.
"""

from __future__ import annotations

from typing import Any

from gateway.model import SampleSink
from gateway.sources.particulate.config import ParticulateSource
from gateway.sources.plugin import RunningSource, SourceKind


def _make(config: Any, sink: SampleSink) -> RunningSource:
    from gateway.sources.particulate.source import DustSensorSource  # noqa: PLC0415 - on use only

    return DustSensorSource(config, sink)


def _probe(probes: Any) -> None:
    from gateway.sources.particulate import probe  # noqa: PLC0415

    probe.register(probes)


def _simulate(argv: list[str]) -> int:
    from gateway.sources.particulate import sim  # noqa: PLC0415

    return sim.main(argv)


PARTICULATE = SourceKind(
    "particulate", ParticulateSource, _make, _probe, ("particulate", _simulate)
)
