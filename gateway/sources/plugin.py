"""Everything a source plugin needs, in one import (docs/plugins.md).

    from gateway.sources.plugin import PolledSource, SourceConfig, SourceKind, ...

The names are the gateway's own seam, re-exported: the built-in kinds use the same ones.
"""

from __future__ import annotations

from gateway.config import (
    ConfigModel,
    DeviceSpec,
    Duration,
    Name,
    PointOffset,
    PointScale,
    PointSpec,
    Problem,
    ReportConfig,
    Section,
    SourceConfig,
)
from gateway.errors import DeviceError, DeviceProtocolError, DeviceTimeout
from gateway.model import Sample, SampleSink, Value
from gateway.sources.device import Device, PolledSource, StopPolling, run_schedule
from gateway.sources.registry import RunningSource, SourceKind

__all__ = [
    "ConfigModel",
    "Device",
    "DeviceError",
    "DeviceProtocolError",
    "DeviceSpec",
    "DeviceTimeout",
    "Duration",
    "Name",
    "PointOffset",
    "PointScale",
    "PointSpec",
    "PolledSource",
    "Problem",
    "ReportConfig",
    "RunningSource",
    "Sample",
    "SampleSink",
    "Section",
    "SourceConfig",
    "SourceKind",
    "StopPolling",
    "Value",
    "run_schedule",
]
