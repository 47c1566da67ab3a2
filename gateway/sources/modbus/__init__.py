"""The Modbus source kinds, ``modbus-rtu`` (RS-485) and ``modbus-tcp``: see README.md.

This module is what the ``street_gateway.sources`` entry points name (``RTU``, ``TCP``): it
imports only the config models (and the ``templates`` section they add), so ``check`` does
not load pymodbus; the running source, the probe and the simulator are imported when they are
used.
"""

from __future__ import annotations

from typing import Any

from gateway.model import SampleSink
from gateway.sources.modbus.config import TEMPLATES, ModbusRtuSource, ModbusTcpSource
from gateway.sources.registry import RunningSource, SourceKind


def _make(config: Any, sink: SampleSink) -> RunningSource:
    from gateway.sources.modbus.source import ModbusSource  # noqa: PLC0415 - on use only

    return ModbusSource(config, sink)


def _probe(probes: Any) -> None:
    from gateway.sources.modbus import probe  # noqa: PLC0415

    probe.register(probes)


def _simulate(argv: list[str]) -> int:
    from gateway.sources.modbus import sim  # noqa: PLC0415

    return sim.main(argv)


# Both add the top-level `templates` (one Section: the registry keeps it once).
RTU = SourceKind(
    "modbus-rtu", ModbusRtuSource, _make, _probe, ("modbus", _simulate), sections=(TEMPLATES,)
)
TCP = SourceKind(
    "modbus-tcp", ModbusTcpSource, _make, _probe, ("modbus", _simulate), sections=(TEMPLATES,)
)
