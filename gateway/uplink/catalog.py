"""The :class:`~gateway.uplink.wire.Catalog` of a config: what ``meta`` and births describe."""

from __future__ import annotations

from gateway.config import Config, SerialSource
from gateway.uplink.wire import Catalog, DeviceInfo, PointInfo


def catalog_of(config: Config, config_digest: str) -> Catalog:
    devices: list[DeviceInfo] = []
    for source in config.sources:
        if isinstance(source, SerialSource):
            points = {p.name: PointInfo("number", p.unit) for p in source.points}
            devices.append(
                DeviceInfo(source.name, source.name, source.kind, source.poll_interval, points)
            )
            continue
        for device in source.devices:
            points = {
                p.name: PointInfo(p.type, p.unit, scaled=p.scale != 1 or p.offset != 0)
                for p in device.points
            }
            devices.append(
                DeviceInfo(device.name, source.name, source.kind, device.interval, points)
            )
    return Catalog(
        gateway_id=config.gateway.id,
        config_digest=config_digest,
        devices=tuple(devices),
        alarms=tuple(rule.name for rule in config.alarms),
    )
