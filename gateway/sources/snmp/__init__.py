"""The ``snmp`` source kind, one SNMP agent (a UPS, a router, a PDU): see README.md.

The ``street_gateway.sources`` entry point names ``SNMP``; importing this module loads only the
config model. pysnmp (and the cipher library under it) is imported when an snmp source is made,
probed or simulated, so ``check`` and a daemon without SNMP sources do not pay for it.
"""

from __future__ import annotations

from typing import Any

from gateway.model import SampleSink
from gateway.sources.registry import RunningSource, SourceKind
from gateway.sources.snmp.config import SnmpSource


def _make(config: Any, sink: SampleSink) -> RunningSource:
    from gateway.sources.snmp.source import SnmpPollSource  # noqa: PLC0415 - on use only

    return SnmpPollSource(config, sink)


def _probe(probes: Any) -> None:
    from gateway.sources.snmp import probe  # noqa: PLC0415

    probe.register(probes)


def _simulate(argv: list[str]) -> int:
    from gateway.sources.snmp import sim  # noqa: PLC0415

    return sim.main(argv)


SNMP = SourceKind("snmp", SnmpSource, _make, _probe, ("snmp", _simulate))
