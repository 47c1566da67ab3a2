"""The :class:`~gateway.uplink.wire.Catalog` of a config: what ``meta`` and births describe."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config import Config
from gateway.uplink.wire import Catalog, DeviceInfo, PointInfo


def catalog_of(
    config: Config,
    config_digest: str,
    config_source: str = "local",
    identity: Mapping[str, str] | None = None,
) -> Catalog:
    devices = tuple(
        DeviceInfo(
            spec.name,
            source.name,
            source.kind,
            spec.interval_s,
            {
                p.name: PointInfo(p.type, p.unit, scaled=p.scaled, writable=p.write is not None)
                for p in spec.points
            },
        )
        for _, source, spec in config.specs()
    )
    return Catalog(
        gateway_id=config.gateway.id,
        config_digest=config_digest,
        devices=devices,
        alarms=tuple(rule.name for rule in config.alarms),
        config_source=config_source,
        identity=identity,
    )
