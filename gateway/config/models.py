"""The pydantic models of the YAML (docs/reference.md): frozen, unknown keys refused.

:class:`Config` is the whole file. Its ``sources`` are typed by :class:`SourceConfig`, what every
source kind shares; the model that validates a file is the registry's
(``gateway.sources.registry.Registry.config_model``): the same, with ``sources`` as the union of
the installed kinds and the top-level sections they add (Modbus: ``templates``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from gateway.addresses import DEFAULT_STATUS_PORT
from gateway.config.base import ConfigModel
from gateway.config.messages import Problem, number
from gateway.config.units import GATEWAY_ID_PATTERN, Duration, FilePath, Name, Size
from gateway.config.writes import AlarmAction, CommandsConfig, WriteConfig

# ---------------------------------------------------------------------------------------------
# Sections


class GatewaySection(ConfigModel):
    id: Annotated[str, Field(pattern=GATEWAY_ID_PATTERN)]
    labels: dict[str, str] = Field(default_factory=dict)


class BufferConfig(ConfigModel):
    path: FilePath | None = None  # resolved by load_config: <state dir>/buffer.db
    max_size: Size = 256 * 1024**2
    max_age: Duration = 30 * 86400.0
    sync: Literal["full", "normal"] = "full"


def _zero_is_off(value: object) -> object:
    """``seal_interval: 0`` (no unit needed for nothing) means no seals."""
    return "0s" if value in (0, "0") and not isinstance(value, bool) else value


class SecurityConfig(ConfigModel):
    """``security``: the identity key and how often the gateway seals (docs/transparency.md)."""

    identity_key: FilePath | None = None  # resolved by load_config: beside the buffer
    seal_interval: Annotated[Duration, BeforeValidator(_zero_is_off), Field(ge=0)] = 10.0


class TlsConfig(ConfigModel):
    ca_file: FilePath | None = None  # None: the system's trust store
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    insecure_skip_verify: bool = False  # for a lab broker only; `check` warns about it


class BatchConfig(ConfigModel):
    max_samples: Annotated[int, Field(ge=1, le=10_000)] = 100
    # Short by default: while messages are in flight, a live sample waits at most this long for
    # others to share its message (with the window idle it goes at once).
    max_wait: Duration = 0.1


class SparkplugConfig(ConfigModel):
    """``uplink.sparkplug`` (with ``uplink.format: sparkplug-b``); checked in _check_sparkplug."""

    group_id: str
    edge_node_id: str | None = None  # default: gateway.id
    primary_host_id: str | None = None  # wait for this host's STATE before births and data
    # since v0.3: DCMD writes writable points (needs commands.require_signature: false)
    commands: bool = False


class UplinkConfig(ConfigModel):
    servers: Annotated[list[str], Field(min_length=1)]
    client_id: str | None = None  # default: gateway.id
    username: str | None = None
    password_file: FilePath | None = None
    tls: TlsConfig | None = None
    topic_prefix: str = "street-gateway"
    qos: Literal[0, 1] = 1
    batch: BatchConfig = BatchConfig()
    keepalive: Duration = 30.0
    reconnect_max: Duration = 5.0
    # Messages published and not yet acknowledged; a window lets a backlog drain at link speed.
    max_inflight: Annotated[int, Field(ge=1, le=1000)] = 16
    format: Literal["json", "sparkplug-b"] = "json"
    sparkplug: SparkplugConfig | None = None
    # json only: samples messages as zstd frames on P/G/samples.zst (docs/reference.md)
    compression: Literal["none", "zstd"] = "none"


class FleetConfig(ConfigModel):
    confirm_within: Duration = 300.0  # a remote config must prove itself within this


class StatusConfig(ConfigModel):
    listen: str = f"127.0.0.1:{DEFAULT_STATUS_PORT}"
    token_file: FilePath | None = None


def _parse_deadband(value: object) -> object:
    """``0.5`` (absolute) or ``"2%"`` (relative); a number given as text is refused."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r}: write a number (absolute) or a percentage like '2%'")
    if not isinstance(value, str):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r}: a deadband is a finite number, 0 or more")
        return float(value)
    text = value.strip()
    if not text.endswith("%"):
        raise ValueError(f"{value!r}: write a number (absolute) or a percentage like '2%'")
    try:
        percent = float(text[:-1])
    except ValueError:
        raise ValueError(f"{value!r}: write a percentage like '2%'") from None
    if not 0 <= percent <= 100 or not math.isfinite(percent):
        raise ValueError(f"{value!r}: a percentage from 0% to 100%")
    return text


class ReportConfig(ConfigModel):
    """Report by exception (``report:`` on a point, or on a device as its points' default)."""

    deadband: Annotated[float | str, BeforeValidator(_parse_deadband)] = 0.0
    max_silence: Duration = 3600.0

    @property
    def absolute(self) -> float:
        return 0.0 if isinstance(self.deadband, str) else self.deadband

    @property
    def fraction(self) -> float | None:
        """``'2%'`` -> 0.02; None for an absolute deadband."""
        return float(self.deadband[:-1]) / 100 if isinstance(self.deadband, str) else None


# ---------------------------------------------------------------------------------------------
# Sources: what every kind shares. Each kind (gateway/sources/<kind>/, or a plugin) subclasses
# SourceConfig with its own keys and ``kind: Literal["its-name"]``; the registry
# (gateway/sources/registry.py) builds the union of ``sources`` from the kinds installed.


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One point of a device, as the gateway sees it whatever the kind: for meta, the catalog,
    report by exception and ``check``."""

    name: str
    type: str = "number"  # as meta names it: a Modbus type, or "number"
    unit: str | None = None
    scaled: bool = False  # value = raw * scale + offset with a scale or offset given
    report: ReportConfig | None = None
    exact: bool = False  # sent on any change (bool, int, string): a deadband does not apply
    write: WriteConfig | None = None  # writable (since v0.3): its limits


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device of a source: its name, its configured interval and its points.

    ``loc`` is where the device is written, relative to its source: ``()`` for a source that is
    its own single device (its ``name`` and ``interval`` are the source's), ``("devices", 2)``
    for the third of a list. ``check`` names the device's keys through it.
    """

    name: str
    interval_s: float
    points: tuple[PointSpec, ...]
    loc: tuple[str | int, ...] = ()
    report: ReportConfig | None = None  # the device's default for its points
    polled: bool = True  # False: it talks on its own, and interval only judges staleness
    template: str | None = None  # the top-level template it uses, if any
    summary: str = ""  # what `check` prints after its name, e.g. "unit 3"


class SourceConfig(ConfigModel):
    """The keys every source kind takes; a kind adds its own and says what its devices are.

    Subclasses set ``kind: Literal["their-kind"]`` and implement :meth:`device_specs`; they may
    override :meth:`check` (cross-field checks, with key paths) and :meth:`prepared`.
    """

    kind: str
    name: Name
    timeout: Duration = 1.0
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    # Cap of the retry backoff of a device that is down (it is polled at most this rarely).
    backoff_max: Duration = 60.0

    def device_specs(self) -> list[DeviceSpec]:
        """The source's devices, in config order."""
        raise NotImplementedError(f"source kind {self.kind!r} does not list its devices")

    def check(self, loc: tuple[str | int, ...], config: Config) -> list[Problem]:
        """Cross-field problems: (key path from the top, starting with ``loc``, message)."""
        return []

    def prepared(self, config: Config) -> SourceConfig:
        """The source as it runs, once the whole config is known (Modbus applies templates)."""
        return self

    def describe(self) -> str:
        """What ``check`` prints after the source's name and kind: its port or host."""
        return ""


class LineSettings(ConfigModel):
    """A serial line's settings, for the kinds that open one (modbus-rtu, serial)."""

    baudrate: Annotated[int, Field(ge=50, le=4_000_000)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


MIN_INTERVAL = 0.01  # a poll every 10ms is already a busy bus; 0 would spin


class WhileRaised(ConfigModel):
    """``while_raised: {interval: {river-1: 1s}}``: while the alarm is raised, these devices are
    polled at that interval instead of their own."""

    interval: Annotated[dict[Name, Duration], Field(min_length=1)]


class AlarmRule(ConfigModel):
    point: Annotated[str, Field(pattern=r"^[^/]+/[^/]+$")]  # "device/point"
    above: float | None = None
    below: float | None = None
    clear_below: float | None = None
    clear_above: float | None = None
    hold: Duration = 0.0
    priority: Literal["low", "normal", "high", "critical"] = "high"
    while_raised: WhileRaised | None = None
    actions: list[AlarmAction] = Field(default_factory=list)  # writes on its transitions

    @property
    def name(self) -> str:
        """``aq-1/pm25>50``: how the alarm is named in its messages."""
        if self.above is not None:
            return f"{self.point}>{number(self.above)}"
        return f"{self.point}<{number(self.below or 0.0)}"


class Config(ConfigModel):
    """The whole file. ``sources`` is typed by the base class here; the model that validates a
    file is ``gateway.sources.registry.Registry.config_model``, the same with ``sources`` as
    the union of the installed kinds, and the sections they add."""

    gateway: GatewaySection
    buffer: BufferConfig = BufferConfig()
    uplink: UplinkConfig
    status: StatusConfig = StatusConfig()
    fleet: FleetConfig = FleetConfig()
    security: SecurityConfig = SecurityConfig()
    sources: Annotated[list[SourceConfig], Field(min_length=1)]
    alarms: list[AlarmRule] = Field(default_factory=list)
    commands: CommandsConfig | None = None  # the command channel (since v0.3)
    include: list[str] = Field(default_factory=list)
    # and the sections the kinds add (Modbus: `templates`), each a mapping of names: section()

    def specs(self) -> Iterator[tuple[int, SourceConfig, DeviceSpec]]:
        """(source index, source, device) for every device, in config order."""
        for i, source in enumerate(self.sources):
            for spec in source.device_specs():
                yield i, source, spec

    def devices(self) -> Iterator[tuple[str, str]]:
        """(source name, device name) for every device."""
        for _, source, spec in self.specs():
            yield source.name, spec.name

    def point_names(self) -> dict[str, set[str]]:
        """Device name -> its point names."""
        return {spec.name: {p.name for p in spec.points} for _, _, spec in self.specs()}

    def section(self, key: str) -> Mapping[str, Any]:
        """A top-level section a source kind adds (gateway.config.Section), by its key; empty
        when no installed kind adds it."""
        value = getattr(self, key, None) if key not in Config.model_fields else None
        return value if isinstance(value, dict) else {}

    @property
    def client_id(self) -> str:
        return self.uplink.client_id or self.gateway.id
