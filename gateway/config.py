"""The configuration: frozen pydantic models of the YAML (docs/reference.md), and ``load_config``.

Every problem in a file becomes one line ``FILE: key.path[0].x: what is wrong``; a user
mistake never shows a traceback. Checks that need more than one field (unique names, register
overlaps, alarm references, file permissions) run after pydantic, in :func:`_cross_check`.
Secrets (the MQTT password, the status token) are read from their files here, in the loader.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import ipaddress
import math
import os
import re
import reprlib
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.sources.registry import Registry

DEFAULT_CONFIG_PATH = Path("/etc/street-gateway/gateway.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/street-gateway")
DEFAULT_STATUS_PORT = 8470
MIN_BUFFER_SIZE = 256 * 1024  # below ~128KiB the WAL allowance alone fills it
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
GATEWAY_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_STRING_REGISTERS = 125  # a string is read in one request: at most 125 registers
MAX_PAUSE = 10.0  # seconds between two requests; more would starve the other devices

# ---------------------------------------------------------------------------------------------
# Durations and sizes: strings in the YAML, seconds (float) and bytes (int) in the models.

_DURATION_UNITS = {
    "ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600),
    "d": Decimal(86400),
}  # fmt: skip
_SIZE_UNITS = {
    "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*$")
MAX_DURATION = 3650 * 86400  # ten years: anything longer is a typo
MAX_SIZE = 1024**4  # 1024GiB, past any SD card or disk a cabinet holds


def parse_duration(text: object) -> float:
    """``'500ms'`` -> 0.5; a bare number is refused, because its unit would be a guess."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(
            f"{quote(text)} is not a duration; write it with a unit, like '10s' or '500ms'"
        )
    match = _QUANTITY.match(text)
    if not match or match.group(2) not in _DURATION_UNITS:
        raise ValueError(f"{quote(text)} is not a duration; use ms, s, m, h or d, like '10s'")
    seconds = _amount(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > MAX_DURATION:
        raise ValueError(f"{quote(text)} is too long; at most 3650d")
    return float(seconds)


def parse_size(text: object) -> int:
    """``'64MiB'`` -> 67108864."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"{quote(text)} is not a size; write it with a unit, like '64MiB'")
    match = _QUANTITY.match(text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{quote(text)} is not a size; use B, KiB, MiB, GiB (or kB, MB, GB)")
    size = _amount(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if size > MAX_SIZE:
        raise ValueError(f"{quote(text)} is too large; at most 1024GiB")
    return int(size)


def _amount(digits: str) -> Decimal:
    # Decimal, not float: a 1 and 400 zeros is "too large", not inf and then an OverflowError.
    return Decimal(digits) if len(digits) <= 30 else Decimal("1e30")


# In the JSON Schema (`street-gateway schema`) they are what the YAML holds: strings with a unit.
_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)\s*$",
    "description": "a duration with its unit: ms, s, m, h or d, like '500ms' or '10s'",
    "examples": ["500ms", "10s", "5m"],
}
_SIZE_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*([bB]|[kKmMgG][iI]?[bB])\s*$",
    "description": "a size with its unit: B, KiB, MiB, GiB (or kB, MB, GB), like '64MiB'",
    "examples": ["64MiB", "1GiB"],
}
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]
Size = Annotated[int, BeforeValidator(parse_size), WithJsonSchema(_SIZE_SCHEMA)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


def _no_nul(text: str) -> str:
    if "\0" in text:  # the OS refuses it: a ValueError at open(), not an OSError
        raise ValueError(f"{quote(text)}: a file name cannot hold a NUL character")
    return text


FilePath = Annotated[Path, BeforeValidator(lambda v: _no_nul(v) if isinstance(v, str) else v)]
DevicePath = Annotated[str, AfterValidator(_no_nul)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


# ---------------------------------------------------------------------------------------------
# Sections


class GatewaySection(_Model):
    id: Annotated[str, Field(pattern=GATEWAY_ID_PATTERN)]
    labels: dict[str, str] = Field(default_factory=dict)


class BufferConfig(_Model):
    path: FilePath | None = None  # resolved by load_config: <state dir>/buffer.db
    max_size: Size = 256 * 1024**2
    max_age: Duration = 30 * 86400.0
    sync: Literal["full", "normal"] = "full"


class TlsConfig(_Model):
    ca_file: FilePath | None = None  # None: the system's trust store
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    insecure_skip_verify: bool = False  # for a lab broker only; `check` warns about it


class BatchConfig(_Model):
    max_samples: Annotated[int, Field(ge=1, le=10_000)] = 100
    # Short by default: while messages are in flight, a live sample waits at most this long for
    # others to share its message (with the window idle it goes at once).
    max_wait: Duration = 0.1


class SparkplugConfig(_Model):
    """``uplink.sparkplug`` (with ``uplink.format: sparkplug-b``); checked in _check_sparkplug."""

    group_id: str
    edge_node_id: str | None = None  # default: gateway.id
    primary_host_id: str | None = None  # wait for this host's STATE before births and data


class UplinkConfig(_Model):
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


class StatusConfig(_Model):
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
    if isinstance(value, str):
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
    return value


class ReportConfig(_Model):
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


class ModbusPoint(_Model):
    name: Name
    table: Literal["coil", "discrete", "input", "holding"]
    address: Annotated[int, Field(ge=0, le=65535)]
    type: Literal[
        "bool",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "float32",
        "int64",
        "uint64",
        "float64",
        "string",
    ]
    bit: Annotated[int, Field(ge=0, le=15)] | None = None
    # AB / BA: a string's two bytes per register, high byte first or swapped
    byte_order: Literal["ABCD", "DCBA", "BADC", "CDAB", "AB", "BA"] = "ABCD"
    length: Annotated[int, Field(ge=1, le=MAX_STRING_REGISTERS)] | None = None  # string only
    scale: Finite = 1.0
    offset: Finite = 0.0
    unit: str | None = None
    report: ReportConfig | None = None

    @property
    def is_bit_table(self) -> bool:
        return self.table in ("coil", "discrete")

    @property
    def width(self) -> int:
        """Registers (or bits, on coil/discrete tables) the point occupies."""
        if self.type == "string" and not self.is_bit_table:
            return self.length or 1
        if self.is_bit_table or self.type in ("bool", "int16", "uint16"):
            return 1
        return 4 if self.type.endswith("64") else 2

    @property
    def exact(self) -> bool:
        """A bool, a string and an unscaled integer are sent on any change (no deadband)."""
        return self.type in ("bool", "string") or (
            not self.type.startswith("float") and self.scale == 1 and self.offset == 0
        )

    def spec(self) -> PointSpec:
        scaled = self.scale != 1 or self.offset != 0
        return PointSpec(self.name, self.type, self.unit, scaled, self.report, self.exact)


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


class SourceConfig(_Model):
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


class LineSettings(_Model):
    """A serial line's settings, for the kinds that open one (modbus-rtu, serial)."""

    baudrate: Annotated[int, Field(ge=50, le=4_000_000)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


MIN_INTERVAL = 0.01  # a poll every 10ms is already a busy bus; 0 would spin


class WhileRaised(_Model):
    """``while_raised: {interval: {river-1: 1s}}``: while the alarm is raised, these devices are
    polled at that interval instead of their own."""

    interval: Annotated[dict[Name, Duration], Field(min_length=1)]


class AlarmRule(_Model):
    point: Annotated[str, Field(pattern=r"^[^/]+/[^/]+$")]  # "device/point"
    above: float | None = None
    below: float | None = None
    clear_below: float | None = None
    clear_above: float | None = None
    hold: Duration = 0.0
    priority: Literal["low", "normal", "high", "critical"] = "high"
    while_raised: WhileRaised | None = None

    @property
    def name(self) -> str:
        """``aq-1/pm25>50``: how the alarm is named in its messages."""
        if self.above is not None:
            return f"{self.point}>{_number(self.above)}"
        return f"{self.point}<{_number(self.below or 0.0)}"


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


class Config(_Model):
    """The whole file. ``sources`` is typed by the base class here; the model that validates a
    file is :func:`gateway.sources.registry.Registry.config_model`, the same with ``sources``
    as the union of the installed kinds."""

    gateway: GatewaySection
    buffer: BufferConfig = BufferConfig()
    uplink: UplinkConfig
    status: StatusConfig = StatusConfig()
    sources: Annotated[list[SourceConfig], Field(min_length=1)]
    alarms: list[AlarmRule] = Field(default_factory=list)
    include: list[str] = Field(default_factory=list)
    # reusable Modbus point lists: a device names one with `template:` (since v0.2)
    templates: dict[Name, Annotated[list[ModbusPoint], Field(min_length=1)]] = Field(
        default_factory=dict
    )

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

    @property
    def client_id(self) -> str:
        return self.uplink.client_id or self.gateway.id


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class LoadedConfig:
    """A valid configuration with what the loader read beside it."""

    config: Config
    path: Path
    warnings: list[str] = field(default_factory=list)
    digest: str = ""  # sha256 of every file read, for the birth message
    mqtt_password: str | None = field(default=None, repr=False)
    status_token: str | None = field(default=None, repr=False)
    kinds: Registry | None = field(default=None, repr=False)  # the source kinds it was read with

    @property
    def status_host_port(self) -> tuple[str, int]:
        return split_listen(self.config.status.listen)


@dataclass
class _Origin:
    """Where each merged list item came from, so problems name the right file and index."""

    files: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    templates: dict[str, str] = field(default_factory=dict)  # template name -> its file

    def locate(self, main: str, loc: Sequence[str | int]) -> tuple[str, Sequence[str | int]]:
        if len(loc) >= 2 and loc[0] == "templates" and str(loc[1]) in self.templates:
            return self.templates[str(loc[1])], loc
        if len(loc) >= 2 and isinstance(loc[1], int) and str(loc[0]) in self.files:
            items = self.files[str(loc[0])]
            if loc[1] < len(items):
                file, index = items[loc[1]]
                return file, (loc[0], index, *loc[2:])
        return main, loc


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return (
        Path(env["STREET_GATEWAY_CONFIG"])
        if env.get("STREET_GATEWAY_CONFIG")
        else (DEFAULT_CONFIG_PATH)
    )


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$STATE_DIRECTORY`` (its first entry) when systemd sets it, else /var/lib/street-gateway."""
    env = os.environ if environ is None else environ
    value = env.get("STATE_DIRECTORY", "")
    return Path(value.split(":")[0]) if value else DEFAULT_STATE_DIR


def load_config(
    path: Path | str, environ: Mapping[str, str] | None = None, kinds: Registry | None = None
) -> LoadedConfig:
    """Read, merge, validate and cross-check a config file; raise ConfigError with every problem.

    ``kinds``: the source kinds to validate ``sources`` with (default: those installed, found
    through their entry points). Nothing else escapes, whatever the file holds: ``check``,
    ``run`` and a reload all end in ConfigError's lines, each bounded (:func:`_bounded`).
    """
    main = str(path)
    if kinds is None:
        from gateway.sources.registry import installed  # noqa: PLC0415 - the kinds import us

        kinds = installed()
    try:
        return _load(Path(path), environ, kinds)
    except ConfigError as exc:
        raise ConfigError(_bounded(exc.problems, main)) from None
    except Exception as exc:  # a bug of ours must not crash a reload either
        problem = f"{main}: cannot check this file, an internal error: {type(exc).__name__}: {exc}"
        raise ConfigError(_bounded([f"{problem} (please report it)"], main)) from None


def _load(path: Path, environ: Mapping[str, str] | None, kinds: Registry) -> LoadedConfig:
    main = str(path)
    data = _read_file(path, f"{main}: ")
    digest = hashlib.sha256(data)
    raw = _parse_yaml(data, main)
    if not isinstance(raw, dict):
        raise ConfigError([f"{main}: the file must be a mapping with gateway, uplink and sources"])
    raw, origin = _merge_includes(raw, path, digest)
    try:
        config = kinds.config_model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(exc, main, origin, kinds)) from None
    config = _resolve_paths(config, path.parent, environ)
    config = config.model_copy(update={"sources": [s.prepared(config) for s in config.sources]})
    problems = [_line(*origin.locate(main, loc), message) for loc, message in _cross_check(config)]
    problems = list(dict.fromkeys(problems))  # a template's problem once, not once per device
    if problems:
        raise ConfigError(problems)
    password = read_secret(config.uplink.password_file) if config.uplink.password_file else None
    token = read_secret(config.status.token_file) if config.status.token_file else None
    return LoadedConfig(
        config=config,
        path=path,
        warnings=[*(f"{main}: {w}" for w in _warnings(config)), *kinds.problems],
        digest=digest.hexdigest()[:16],
        mqtt_password=password,
        status_token=token,
        kinds=kinds,
    )


MAX_SECRET_BYTES = 64 * 1024


def read_secret(path: Path) -> str:
    """A secret file's content with surrounding whitespace stripped."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SECRET_BYTES + 1)
        if len(data) > MAX_SECRET_BYTES:
            raise ConfigError([f"{path}: a secret file holds one line, not over 64KiB"])
        return data.decode("utf-8").strip()
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL in the path
        raise ConfigError([f"{path}: cannot read secret: {exc}"]) from None


# ---------------------------------------------------------------------------------------------
# Reading YAML: bounded, so that no file can crash or flood the answer

MAX_FILE_BYTES = 4 * 1024**2  # the example is 4KiB: a bigger file is not a config
MAX_DEPTH = 64  # the schema nests 6 deep; PyYAML's composer recurses, and fails near 490
MAX_VALUES = 100_000  # values once aliases are expanded: refuses an alias bomb before pydantic
MAX_INCLUDED_FILES = 100


def _read_file(path: Path, where: str, name: str = "") -> bytes:
    """The file's bytes. ``where`` starts each problem: the file itself, or the include that
    names it (then ``name`` is the included file's)."""
    subject = f"{name} " if name else ""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([f"{where}file not found{': ' + name if name else ''}"]) from None
    except IsADirectoryError:
        hint = "; name files, or a glob like 'conf.d/*.yaml'" if name else ""
        raise ConfigError([f"{where}{subject}is a directory, not a file{hint}"]) from None
    except OSError as exc:
        raise ConfigError([f"{where}cannot read {subject}({exc.strerror})"]) from None
    except ValueError:  # a NUL byte in the name
        raise ConfigError([f"{where}{quote(str(path))} is not a file name"]) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError([f"{where}{subject}is larger than 4MiB: not a config file"])
    return data


class _Refused(yaml.MarkedYAMLError):
    """A document we will not build: too deep, too big, or a value that cannot be read."""


def _refused(problem: str, event: Any) -> _Refused:
    return _Refused(problem=problem, problem_mark=event.start_mark)


@dataclass
class _Frame:
    """A collection open in the event stream, while :func:`_vet` walks it."""

    part: str | int  # its place in its parent: a key or an index
    anchor: str | None
    is_mapping: bool
    values: int = 1  # values in it so far, aliases expanded
    depth: int = 1  # levels below it, aliases expanded
    items: int = 0  # events seen: keys and values alternate in a mapping
    key: str = "?"  # in a mapping, the last key seen
    lines: dict[str, int] = field(default_factory=dict)  # mapping keys -> their first line


def _vet(data: bytes) -> list[Problem]:
    """Walk the document's events, which PyYAML produces without recursion, before composing it.

    Raises _Refused for nesting past MAX_DEPTH (the composer recurses: near 490 levels PyYAML's
    crashed with RecursionError), for more than MAX_VALUES values or MAX_DEPTH levels once
    aliases are expanded (an alias bomb: its answer quoted megabytes), and for an alias used
    inside its own anchor. Returns the problems that do not stop the reading: duplicate keys (a
    block pasted twice would have its first copy silently ignored) and escapes that make no
    character (half a surrogate pair, which nothing can print).
    """
    problems: list[Problem] = []
    stack: list[_Frame] = []
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (values, depth), expanded

    def place(event: Any, values: int, depth: int, anchor: str | None) -> None:
        """A finished value (scalar, alias or collection) goes into the collection around it."""
        if anchor is not None:
            anchors[anchor] = (values, depth)
        if stack:
            parent = stack[-1]
            parent.values += values
            parent.depth = max(parent.depth, depth + 1)
            parent.items += 1
            if parent.values > MAX_VALUES:
                raise _refused(
                    f"expands to more than {MAX_VALUES:,} values through its aliases", event
                )
            if parent.depth > MAX_DEPTH + 1:
                raise _refused(
                    f"nested deeper than {MAX_DEPTH} levels once aliases are expanded", event
                )

    def child_part() -> str | int:
        if not stack:
            return ""
        parent = stack[-1]
        if parent.is_mapping:
            return parent.key if parent.items % 2 else _KEY
        return parent.items

    events: Iterator[Any] = yaml.parse(data, Loader=_Loader)  # C or Python marks: both fine
    for event in events:
        if isinstance(event, yaml.ScalarEvent):
            path = [f.part for f in stack[1:]]
            parent = stack[-1] if stack else None
            is_key = parent is not None and parent.is_mapping and parent.items % 2 == 0
            if is_key and parent is not None:
                path.append(event.value)
                parent.key = event.value
                _note_duplicate(parent, event, path, problems)
            elif parent is not None:
                path.append(child_part())
            if not event.value.isascii():
                problems += _not_unicode(event.value, path)
            place(event, 1, 1, event.anchor)
        elif isinstance(event, yaml.AliasEvent):
            if any(frame.anchor == event.anchor for frame in stack):
                raise _refused(f"alias *{quote(event.anchor)} is used inside its own anchor", event)
            values, depth = anchors.get(
                event.anchor or "", (1, 1)
            )  # the composer names an undefined one
            place(event, values, depth, None)
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise _refused(f"nested deeper than {MAX_DEPTH} levels", event)
            is_mapping = isinstance(event, yaml.MappingStartEvent)
            stack.append(_Frame(child_part(), event.anchor, is_mapping))
        elif isinstance(event, yaml.CollectionEndEvent):
            frame = stack.pop()
            place(event, frame.values, frame.depth, frame.anchor)
    return problems


def _note_duplicate(mapping: _Frame, key: Any, path: list[Any], problems: list[Problem]) -> None:
    if key.value == "<<" and key.style is None:
        return  # a merge key may be given again and override on purpose
    line = key.start_mark.line + 1
    if key.value not in mapping.lines:
        mapping.lines[key.value] = line
        return
    first = mapping.lines[key.value]
    where = f"on line {line}" if first == line else f"on lines {first} and {line}"
    problems.append((tuple(path), f"given twice, {where}; only the last would count"))


def _not_unicode(text: str, path: list[Any]) -> list[Problem]:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a "\\ud800" escape makes half a character
        return [(tuple(path), f"holds {ascii(text[exc.start])[1:-1]}, which is not a character")]
    return []


_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: about 5 times faster


class _SafeValues:
    """Turns a value the constructor cannot build into a YAML error with its line (a 5000-digit
    integer, a 13th month), instead of a ValueError."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]  # a mixin
        except (ValueError, OverflowError) as exc:
            reason = "too many digits" if "digits" in str(exc) else str(exc)
            raise _Refused(
                problem=f"cannot read {quote(node.value)}: {reason}", problem_mark=node.start_mark
            ) from None


class _Loader(_SafeValues, _Base):  # type: ignore[misc]  # the base is chosen at import time
    """The safe loader: libyaml's when PyYAML has it, Python's otherwise."""


_KEY = "?"  # the part of a key path that a key itself holds while it is read


def _parse_yaml(data: bytes, shown: str) -> Any:
    try:
        problems = _vet(data)
        if problems:
            raise ConfigError([_line(shown, loc, message) for loc, message in problems])
        return yaml.load(data, Loader=_Loader)  # a safe loader
    except yaml.reader.ReaderError as exc:
        raise ConfigError([f"{shown}: {_reader_problem(exc, data)}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        if isinstance(exc, _Refused):
            raise ConfigError([f"{shown}: {where}{exc.problem}"]) from None
        problem = exc.problem or ""
        if mark and exc.context_mark and "duplicate anchor" in (exc.context or ""):
            problem = f"anchor used twice (lines {exc.context_mark.line + 1} and {mark.line + 1})"
        raise ConfigError([f"{shown}: {where}YAML syntax error: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{shown}: YAML syntax error: {exc}"]) from None


def _reader_problem(exc: yaml.reader.ReaderError, data: bytes) -> str:
    """PyYAML's reader errors say "position N" on two lines: one line, with the line number."""
    line = data[: exc.position].count(b"\n") + 1
    if "octet" in exc.reason or "byte" in exc.reason:  # libyaml's words, then Python's
        return f"line {line}: not UTF-8 text (byte 0x{exc.character:02x}); save the file as UTF-8"
    return f"line {line}: character U+{exc.character:04X} is not allowed in YAML"


def _merge_includes(raw: dict[str, Any], path: Path, digest: Any) -> tuple[dict[str, Any], _Origin]:
    """Append the ``sources`` and ``alarms`` of every included file, remembering their origin."""
    main = str(path)
    origin = _Origin()
    merged = dict(raw)
    if isinstance(raw.get("templates"), dict):
        origin.templates = dict.fromkeys(map(str, raw["templates"]), main)
    for key in ("sources", "alarms"):
        items = raw.get(key)
        if isinstance(items, list):
            origin.files[key] = [(main, i) for i in range(len(items))]
    includes = raw.get("include") or []
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError([f"{main}: include: must be a list of file names or globs"])
    problems: list[str] = []
    read = 0
    for index, pattern in enumerate(includes):
        where = f"{main}: include[{index}]: "
        full = str(path.parent / pattern)
        try:
            matches = sorted(glob.glob(full))
        except ValueError:  # a NUL byte
            problems.append(f"{where}{quote(pattern)} is not a file name or glob")
            continue
        if not matches and not glob.has_magic(pattern):
            problems.append(f"{where}file not found: {full}")
        for match in matches:
            read += 1
            if read > MAX_INCLUDED_FILES:
                raise ConfigError([*problems, f"{where}more than {MAX_INCLUDED_FILES} files"])
            problems += _include(Path(match), where, merged, origin, digest)
    if problems:
        raise ConfigError(problems)
    return merged, origin


def _include(
    path: Path, where: str, merged: dict[str, Any], origin: _Origin, digest: Any
) -> list[str]:
    """Read one included file into ``merged``; its problems, if any."""
    shown = str(path)
    try:
        data = _read_file(path, where, shown)
        digest.update(hashlib.sha256(data).digest())
        part = _parse_yaml(data, shown)
    except ConfigError as exc:
        return exc.problems
    if part is None:
        return []
    if not isinstance(part, dict):
        return [f"{shown}: an included file must be a mapping of sources/alarms"]
    problems = [
        f"{shown}: {_key_path([key])}: an included file may only hold sources, alarms and templates"
        for key in sorted(set(part) - {"sources", "alarms", "templates"}, key=str)
    ]
    problems += _merge_templates(part, merged, origin, shown)
    for key in ("sources", "alarms"):
        items = part.get(key) or []
        if not isinstance(items, list):
            problems.append(f"{shown}: {key}: must be a list")
            continue
        existing = merged.get(key) or []
        merged[key] = [*existing, *items] if isinstance(existing, list) else existing
        origin.files.setdefault(key, []).extend((shown, i) for i in range(len(items)))
    return problems


def _merge_templates(
    part: dict[str, Any], merged: dict[str, Any], origin: _Origin, shown: str
) -> list[str]:
    """Add an included file's templates to ``merged``; a name defined twice is a problem."""
    templates = part.get("templates")
    if templates is None:
        return []
    if not isinstance(templates, dict):
        return [f"{shown}: templates: must be a mapping of template names to point lists"]
    into = merged.get("templates")
    into = {} if into is None else into
    if not isinstance(into, dict):
        return []  # the main file's own mistake, reported by validation
    into = merged["templates"] = dict(into)
    problems = []
    for name, points in templates.items():
        if name in into:
            first = origin.templates.get(str(name), "the main file")
            problems.append(f"{shown}: templates.{name}: already defined in {first}")
            continue
        into[name] = points
        origin.templates[str(name)] = shown
    return problems


def _resolve_paths(config: Config, base: Path, environ: Mapping[str, str] | None) -> Config:
    """Make file paths relative to the config file's folder; default the buffer path."""

    def rel(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else base / p)

    buffer_path = rel(config.buffer.path) or state_dir(environ) / "buffer.db"
    tls = config.uplink.tls
    if tls is not None:
        tls = tls.model_copy(
            update={"ca_file": rel(tls.ca_file), "cert_file": rel(tls.cert_file),
                    "key_file": rel(tls.key_file)}
        )  # fmt: skip
    uplink = config.uplink.model_copy(
        update={"password_file": rel(config.uplink.password_file), "tls": tls}
    )
    return config.model_copy(
        update={
            "buffer": config.buffer.model_copy(update={"path": buffer_path}),
            "uplink": uplink,
            "status": config.status.model_copy(
                update={"token_file": rel(config.status.token_file)}
            ),
        }
    )


# ---------------------------------------------------------------------------------------------
# Messages


def _line(file: str, loc: Sequence[Any], message: str) -> str:
    return f"{file}: {_key_path(loc)}: {message}" if loc else f"{file}: {message}"


def _key_path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{_cut(part)}" if out else _cut(part))
    return out


MAX_PROBLEMS = 50  # a file with more is fixed from the top
MAX_LINE = 500
QUOTE_LIMIT = 80

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = QUOTE_LIMIT
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 2, 6, 4, 6
_REPR.fillvalue = "…"


def quote(value: object) -> str:
    """``repr(value)`` cut to about 80 characters with ``…``, however big the value (an alias
    bomb's expansion is never walked whole)."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int past Python's 4300 digits
        text = "<a number of more than 4300 digits>"
    return _cut(text, QUOTE_LIMIT)


def _cut(text: object, limit: int = QUOTE_LIMIT) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bounded(problems: list[str], main: str) -> list[str]:
    """At most MAX_PROBLEMS lines, each one printable line of at most MAX_LINE characters."""
    lines = [_printable(problem) for problem in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        lines.append(f"{_printable(main)}: and {len(problems) - MAX_PROBLEMS} more problems")
    return lines


def _printable(text: str) -> str:
    # A key or a path may hold a newline or a lone surrogate: one line that stderr can encode.
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return _cut(text, MAX_LINE)


def _pydantic_problems(
    exc: ValidationError, main: str, origin: _Origin, kinds: Registry
) -> list[str]:
    lines: list[str] = []
    for error in exc.errors():
        # A discriminated union puts the tag in the path: sources[1].modbus-rtu.devices -> drop it.
        raw = [p for i, p in enumerate(error["loc"]) if not (i == 2 and p in kinds.kinds)]
        file, loc = origin.locate(main, raw)
        line = _line(file, loc, _message(error, kinds))
        if line not in lines:
            lines.append(line)
    return lines


def _message(error: Mapping[str, Any], kinds: Registry) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{quote(value)} is not one of {expected}"
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "union_tag_invalid":
        return kinds.unknown(str(ctx.get("tag")))
    if kind == "union_tag_not_found":
        return f"required key 'kind' is missing (installed kinds: {', '.join(kinds.kinds)})"
    if kind == "string_pattern_mismatch":
        return f"{quote(value)} does not match {ctx.get('pattern')}"
    if kind == "less_than_equal":
        return f"{quote(value)} is more than the maximum, {ctx.get('le')}"
    if kind == "greater_than_equal":
        return f"{quote(value)} is less than the minimum, {ctx.get('ge')}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "finite_number":
        return f"{quote(value)} is not a finite number"
    return f"{error['msg'][0].lower()}{error['msg'][1:]} (got {quote(value)})"


# ---------------------------------------------------------------------------------------------
# Cross-field checks: (key path, message) pairs


Problem = tuple[tuple[str | int, ...], str]


def _cross_check(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    problems += _check_names(config)
    for i, source in enumerate(config.sources):
        problems += source.check(("sources", i), config)  # the kind's own checks
    for name, points in config.templates.items():
        problems += check_points(points, PointPlaces(("templates", name), None, {}))
    problems += _check_reports(config)
    problems += _check_alarms(config)
    if config.buffer.max_size < MIN_BUFFER_SIZE:
        problems.append(
            (("buffer", "max_size"),
             "must be at least 256KiB, or the buffer evicts samples as it stores them")
        )  # fmt: skip
    problems += _check_durations(config)
    problems += _check_uplink(config)
    problems += _check_status(config)
    return problems


def _check_durations(config: Config) -> list[Problem]:
    """Every duration within the range where it means something: (key path, value, low, high)."""
    uplink = config.uplink
    ranges: list[tuple[tuple[str | int, ...], float, float, float]] = [
        (("buffer", "max_age"), config.buffer.max_age, 60.0, MAX_DURATION),
        # MQTT counts keepalive in whole seconds, in 16 bits.
        (("uplink", "keepalive"), uplink.keepalive, 1.0, 65535.0),
        (("uplink", "reconnect_max"), uplink.reconnect_max, 0.1, MAX_DURATION),
        (("uplink", "batch", "max_wait"), uplink.batch.max_wait, 0.0, 60.0),
    ]
    for i, source in enumerate(config.sources):
        loc: tuple[str | int, ...] = ("sources", i)
        ranges += [
            ((*loc, "timeout"), source.timeout, MIN_INTERVAL, MAX_DURATION),
            ((*loc, "backoff_max"), source.backoff_max, 0.1, MAX_DURATION),
        ]
        ranges += [
            ((*loc, *spec.loc, "interval"), spec.interval_s, MIN_INTERVAL, MAX_DURATION)
            for spec in source.device_specs()
        ]
    problems: list[Problem] = []
    for loc, value, low, high in ranges:
        if value < low:
            problems.append((loc, f"{_seconds(value)} is too short; at least {_seconds(low)}"))
        elif value > high:
            problems.append((loc, f"{_seconds(value)} is too long; at most {_seconds(high)}"))
    return problems


def _seconds(value: float) -> str:
    return f"{value:g}s" if value >= 1 else f"{value * 1000:g}ms"


def _check_names(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    seen_sources: dict[str, int] = {}
    seen_devices: dict[str, str] = {}
    for i, source in enumerate(config.sources):
        if source.name in seen_sources:
            problems.append(
                (("sources", i, "name"),
                 f"{source.name!r} is already the name of sources[{seen_sources[source.name]}]")
            )  # fmt: skip
        seen_sources.setdefault(source.name, i)
        devices = [(("sources", i, *d.loc, "name"), d.name) for d in source.device_specs()]
        for loc, name in devices:
            if name in seen_devices:
                problems.append(
                    (loc, f"device name {name!r} is already used at {seen_devices[name]}")
                )
            seen_devices.setdefault(name, _key_path(loc[:-1]))
    return problems


def duplicates(names: Sequence[str]) -> Iterator[tuple[int, str]]:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            yield index, name
        seen.add(name)


class _Templated(Protocol):
    @property
    def template(self) -> str | None: ...


class PointPlaces:
    """Where a device's k-th point (template points first) is written, for messages: in the
    template (``templates.sdm120[k]``) or among the device's own ``points``."""

    def __init__(
        self,
        loc: tuple[str | int, ...],
        device: _Templated | None,
        templates: Mapping[str, Sequence[ModbusPoint]],
    ) -> None:
        self.loc = loc
        self.template = device.template if device is not None else None
        known = self.template is not None and self.template in templates
        self.shared = len(templates[self.template]) if known and self.template else 0
        self.key = "points" if device is not None else None

    def __call__(self, k: int) -> tuple[str | int, ...]:
        if k < self.shared:
            return ("templates", str(self.template), k)
        return (*self.loc, self.key, k - self.shared) if self.key else (*self.loc, k)

    def label(self, k: int) -> str:
        if k < self.shared:
            return f"template {self.template!r}"
        if self.key is None:  # a template on its own
            return _key_path((*self.loc, k))
        return f"{self.key}[{k - self.shared}]"

    def in_template(self, *indices: int) -> bool:
        """All these points come from the template: its own check reports their problems."""
        return all(k < self.shared for k in indices)


def check_points(points: Sequence[ModbusPoint], where: PointPlaces) -> list[Problem]:
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for k, point in enumerate(points):
        if point.name in first and not where.in_template(first[point.name], k):
            also = (
                f" (also in {where.label(first[point.name])})"
                if where.in_template(first[point.name])
                else ""
            )
            problems.append(((*where(k), "name"), f"point name {point.name!r} is used twice{also}"))
        first.setdefault(point.name, k)
    whole: dict[tuple[str, int], int] = {}  # (table, address) -> index of a non-bit point
    bits: dict[tuple[str, int], dict[int, int]] = {}  # (table, address) -> {bit: point index}
    for k, point in enumerate(points):
        ploc = where(k)
        own = not where.in_template(k)
        if point.is_bit_table and point.type != "bool":
            if own:
                problems.append(
                    ((*ploc, "type"),
                     f"a {point.table} table holds bits; type must be bool, not {point.type}")
                )  # fmt: skip
            continue
        if point.bit is not None and (point.type != "bool" or point.is_bit_table):
            if own:
                problems.append(
                    ((*ploc, "bit"), "bit is only for a bool point on an input or holding register")
                )
            continue
        if problem := _check_point_type(point):
            if own:
                problems.append(((*ploc, problem[0]), problem[1]))
            continue
        if point.address + point.width > 65536:
            if own:
                problems.append(
                    ((*ploc, "address"),
                     f"{point.type} at {point.address} needs {point.width} registers, past 65535")
                )  # fmt: skip
            continue
        for address in range(point.address, point.address + point.width):
            key = (point.table, address)
            shared = bits.get(key, {})
            if point.bit is None:
                clash = whole.get(key, next(iter(shared.values()), None))
            else:
                clash = whole.get(key, shared.get(point.bit))
            if clash is not None:
                if not where.in_template(clash, k):
                    problems.append(
                        ((*ploc, "address"),
                         f"{point.name!r} overlaps {points[clash].name!r} ({where.label(clash)}) "
                         f"at {point.table} address {address}")
                    )  # fmt: skip
                break
            if point.bit is None:
                whole[key] = k
            else:
                bits.setdefault(key, {})[point.bit] = k
    return problems


def _check_point_type(point: ModbusPoint) -> tuple[str, str] | None:
    """The (key, message) of what is wrong with a point's type-specific keys, if anything."""
    given = point.model_fields_set
    if point.type == "string":
        if point.length is None:
            return "length", "type string needs length: its number of registers (2 characters each)"
        if "byte_order" in given and point.byte_order not in ("AB", "BA"):
            return "byte_order", (
                f"{point.byte_order!r}: a string takes AB (high byte first, the default) or BA"
            )
        if "scale" in given or "offset" in given:
            return (
                "scale" if "scale" in given else "offset",
                "a string point takes no scale or offset",
            )
        return None
    if point.length is not None:
        return "length", f"length goes only with type: string, not {point.type}"
    if point.byte_order in ("AB", "BA"):
        return (
            "byte_order",
            f"{point.byte_order} is for a string; {point.type} takes ABCD, DCBA, BADC or CDAB",
        )
    return None


def _reports(
    config: Config,
) -> Iterator[tuple[tuple[str | int, ...], ReportConfig, PointSpec | None]]:
    """Every ``report`` in the config: (key path, it, the point it is on, if any)."""
    for i, _, spec in config.specs():
        hloc = ("sources", i, *spec.loc)
        if spec.report is not None:
            yield (*hloc, "report"), spec.report, None
        for k, point in enumerate(spec.points):
            if point.report is not None:
                yield (*hloc, "points", k, "report"), point.report, point
    for name, points in config.templates.items():
        for k, modbus in enumerate(points):
            if modbus.report is not None:
                yield ("templates", name, k, "report"), modbus.report, modbus.spec()


def _check_reports(config: Config) -> list[Problem]:
    return [
        ((*loc, "max_silence"), "must be more than 0s")
        for loc, report, _ in _reports(config)
        if report.max_silence <= 0
    ]


def _check_alarms(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    points = config.point_names()
    for i, alarm in enumerate(config.alarms):
        loc: tuple[str | int, ...] = ("alarms", i)
        device, _, point = alarm.point.partition("/")
        if device not in points:
            close = difflib.get_close_matches(device, points, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(((*loc, "point"), f"no device named {quote(device)}{hint}"))
        elif point not in points[device]:
            problems.append(
                ((*loc, "point"),
                 f"device {quote(device)} has no point {quote(point)}; "
                 f"it has {', '.join(sorted(points[device]))}")
            )  # fmt: skip
        problems += _check_while_raised(alarm, loc, points)
        if (alarm.above is None) == (alarm.below is None):
            problems.append((loc, "give exactly one of above or below"))
            continue
        if alarm.clear_above is not None and alarm.above is not None:
            problems.append(
                ((*loc, "clear_above"), "clear_above goes with below; with above use clear_below")
            )
        if alarm.clear_below is not None and alarm.below is not None:
            problems.append(
                ((*loc, "clear_below"), "clear_below goes with above; with below use clear_above")
            )
        if (
            alarm.above is not None
            and alarm.clear_below is not None
            and alarm.clear_below > alarm.above
        ):
            problems.append(
                (
                    (*loc, "clear_below"),
                    f"{_number(alarm.clear_below)} must not exceed above ({_number(alarm.above)})",
                )
            )
        if (
            alarm.below is not None
            and alarm.clear_above is not None
            and alarm.clear_above < alarm.below
        ):
            problems.append(
                (
                    (*loc, "clear_above"),
                    f"{_number(alarm.clear_above)} must not be below "
                    f"below ({_number(alarm.below)})",
                )
            )
        for key in ("above", "below", "clear_below", "clear_above"):
            value = getattr(alarm, key)
            if value is not None and not math.isfinite(value):
                problems.append(((*loc, key), f"{value} is not a finite number"))
    return problems


def _check_while_raised(
    alarm: AlarmRule, loc: tuple[str | int, ...], points: Mapping[str, object]
) -> list[Problem]:
    if alarm.while_raised is None:
        return []
    problems: list[Problem] = []
    for device, interval in alarm.while_raised.interval.items():
        dloc = (*loc, "while_raised", "interval", device)
        if device not in points:
            close = difflib.get_close_matches(device, list(points), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append((dloc, f"no device named {quote(device)}{hint}"))
        elif interval < MIN_INTERVAL:
            problems.append(
                (dloc, f"{_seconds(interval)} is too short; at least {_seconds(MIN_INTERVAL)}")
            )
    return problems


def _check_uplink(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    uplink = config.uplink
    for i, server in enumerate(uplink.servers):
        try:
            parse_server(server)
        except ValueError as exc:
            problems.append((("uplink", "servers", i), str(exc)))
    prefix = uplink.topic_prefix
    if not prefix or prefix.startswith("/") or prefix.endswith("/") or set(prefix) & set("+#\0"):
        problems.append(
            (
                ("uplink", "topic_prefix"),
                f"{quote(prefix)}: no wildcards (+ #) and no leading or trailing /",
            )
        )
    problems += _check_secret_file(uplink.password_file, ("uplink", "password_file"))
    if uplink.password_file is not None and uplink.username is None:
        problems.append((("uplink", "username"), "password_file is set, so username is needed too"))
    if uplink.tls is not None:
        tls = uplink.tls
        for key in ("ca_file", "cert_file"):
            value = getattr(tls, key)
            if value is not None and not value.is_file():
                problems.append((("uplink", "tls", key), f"file not found: {value}"))
        problems += _check_secret_file(tls.key_file, ("uplink", "tls", "key_file"))
        if (tls.cert_file is None) != (tls.key_file is None):
            problems.append((("uplink", "tls"), "cert_file and key_file go together"))
    problems += _check_sparkplug(config)
    return problems


# -- Sparkplug B (uplink.format: sparkplug-b) -------------------------------------------------


def _check_sparkplug(config: Config) -> list[Problem]:
    uplink, loc = config.uplink, ("uplink", "sparkplug")
    if uplink.format != "sparkplug-b":
        return []
    sp = uplink.sparkplug
    if sp is None:
        return [(loc, "uplink.format is sparkplug-b, so uplink.sparkplug.group_id is needed")]
    problems: list[Problem] = []
    ids = {"group_id": sp.group_id, "edge_node_id": sp.edge_node_id or config.gateway.id}
    if sp.primary_host_id is not None:
        ids["primary_host_id"] = sp.primary_host_id
    for key, value in ids.items():
        if not value or set(value) & set("+/#\0"):
            problems.append(((*loc, key), f"{value!r}: must be non-empty, without + / #"))
    seen: dict[tuple[str, bool], int] = {}  # one alarm/<device>/<point>/<above|below> metric
    for i, rule in enumerate(config.alarms):
        metric = (rule.point, rule.above is not None)
        if metric in seen:
            problems.append(
                (("alarms", i),
                 f"with sparkplug-b, one alarm per point and direction: alarms[{seen[metric]}] "
                 f"has {rule.point} {'above' if metric[1] else 'below'} already")
            )  # fmt: skip
        seen.setdefault(metric, i)
    return problems


def _sparkplug_warnings(config: Config) -> list[str]:
    uplink = config.uplink
    if uplink.format != "sparkplug-b":
        if uplink.sparkplug is not None:
            return ["uplink.sparkplug is set but uplink.format is json: it is not used"]
        return []
    if uplink.qos == 0:
        return [
            "uplink.qos: 0 with sparkplug-b: the checkpoint that acknowledges Sparkplug data goes "
            "at QoS 0 too, so nothing is acknowledged and delivery is best-effort"
        ]
    return []


def _check_status(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    try:
        host, _ = split_listen(config.status.listen)
    except ValueError as exc:
        return [(("status", "listen"), str(exc))]
    if not is_loopback(host) and config.status.token_file is None:
        problems.append(
            (("status", "listen"),
             f"{quote(config.status.listen)} is not a loopback address, "
             "so status.token_file is required")
        )  # fmt: skip
    problems += _check_secret_file(config.status.token_file, ("status", "token_file"))
    return problems


def _check_secret_file(path: Path | None, loc: tuple[str | int, ...]) -> list[Problem]:
    if path is None:
        return []
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return [(loc, f"file not found: {path}")]
    except OSError as exc:
        return [(loc, f"cannot read {path}: {exc.strerror}")]
    if not stat.S_ISREG(mode):
        return [(loc, f"{path} is not a regular file")]
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return [
            (
                loc,
                f"{path} is readable by group or others "
                f"(mode {stat.S_IMODE(mode):o}); chmod 600 it",
            )
        ]
    return []


def _warnings(config: Config) -> list[str]:
    warnings: list[str] = []
    for loc, report, point in _reports(config):
        if point is not None and point.exact and "deadband" in report.model_fields_set:
            warnings.append(
                f"{_key_path(loc)}.deadband: does not apply to a {point.type} point, "
                "which is sent on any change"
            )
    used = {spec.template for _, _, spec in config.specs()}
    warnings += [
        f"templates.{name}: no device uses it" for name in config.templates if name not in used
    ]
    if config.uplink.qos == 0:
        warnings.append(
            "uplink.qos: 0 means the broker acknowledges nothing: delivery is best-effort"
        )
    warnings += _sparkplug_warnings(config)
    if config.uplink.tls is not None and config.uplink.tls.insecure_skip_verify:
        warnings.append("uplink.tls.insecure_skip_verify: the broker's certificate is not checked")
    for i, server in enumerate(config.uplink.servers):
        scheme, host, _ = parse_server(server)
        if scheme == "mqtt" and config.uplink.password_file is not None and not is_loopback(host):
            warnings.append(f"uplink.servers[{i}]: the password crosses the network in clear text")
    return warnings


# ---------------------------------------------------------------------------------------------
# Small parsers shared by the loader and the adapters


def parse_server(url: str) -> tuple[Literal["mqtt", "mqtts"], str, int]:
    """``mqtts://host:8883`` -> ("mqtts", "host", 8883); the port defaults by scheme."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"{quote(url)}: the scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"{quote(url)}: no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{quote(url)}: the port is not a number from 1 to 65535") from None
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError(
            f"{quote(url)}: only scheme://host:port; credentials go in username/password_file"
        )
    scheme: Literal["mqtt", "mqtts"] = "mqtts" if parts.scheme == "mqtts" else "mqtt"
    return scheme, parts.hostname, port or (8883 if scheme == "mqtts" else 1883)


def split_listen(listen: str) -> tuple[str, int]:
    """``127.0.0.1:8470`` / ``[::1]:8470`` -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{quote(listen)} is not HOST:PORT, like 127.0.0.1:{DEFAULT_STATUS_PORT}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
