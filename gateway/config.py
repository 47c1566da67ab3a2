"""The configuration: frozen pydantic models of SPEC.md's YAML schema, and ``load_config``.

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
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from gateway.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/street-gateway/gateway.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/street-gateway")
DEFAULT_STATUS_PORT = 8470
MIN_BUFFER_SIZE = 256 * 1024  # below ~128KiB the WAL allowance alone fills it
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
GATEWAY_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

# ---------------------------------------------------------------------------------------------
# Durations and sizes: strings in the YAML, seconds (float) and bytes (int) in the models.

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*$")


def parse_duration(text: object) -> float:
    """``'500ms'`` -> 0.5; a bare number is refused, because its unit would be a guess."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration; write it with a unit, like '10s' or '500ms'")
    match = _QUANTITY.match(text)
    if not match or match.group(2) not in _DURATION_UNITS:
        raise ValueError(f"{text!r} is not a duration; use ms, s, m, h or d, like '10s'")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(text: object) -> int:
    """``'64MiB'`` -> 67108864."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"{text!r} is not a size; write it with a unit, like '64MiB'")
    match = _QUANTITY.match(text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size; use B, KiB, MiB, GiB (or kB, MB, GB)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


# ---------------------------------------------------------------------------------------------
# Sections


class GatewaySection(_Model):
    id: Annotated[str, Field(pattern=GATEWAY_ID_PATTERN)]
    labels: dict[str, str] = Field(default_factory=dict)


class BufferConfig(_Model):
    path: Path | None = None  # resolved by load_config: <state dir>/buffer.db
    max_size: Size = 256 * 1024**2
    max_age: Duration = 30 * 86400.0
    sync: Literal["full", "normal"] = "full"


class TlsConfig(_Model):
    ca_file: Path | None = None  # None: the system's trust store
    cert_file: Path | None = None
    key_file: Path | None = None
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
    password_file: Path | None = None
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
    token_file: Path | None = None


class ModbusPoint(_Model):
    name: Name
    table: Literal["coil", "discrete", "input", "holding"]
    address: Annotated[int, Field(ge=0, le=65535)]
    type: Literal[
        "bool", "int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64"
    ]
    bit: Annotated[int, Field(ge=0, le=15)] | None = None
    byte_order: Literal["ABCD", "DCBA", "BADC", "CDAB"] = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None

    @property
    def is_bit_table(self) -> bool:
        return self.table in ("coil", "discrete")

    @property
    def width(self) -> int:
        """Registers (or bits, on coil/discrete tables) the point occupies."""
        if self.is_bit_table or self.type in ("bool", "int16", "uint16"):
            return 1
        return 4 if self.type.endswith("64") else 2


class ModbusDevice(_Model):
    name: Name
    unit: Annotated[int, Field(ge=0, le=247)]
    interval: Duration = 10.0
    points: Annotated[list[ModbusPoint], Field(min_length=1)]


class _SourceBase(_Model):
    name: Name
    timeout: Duration = 1.0
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    # Cap of the retry backoff of a device that is down (it is polled at most this rarely).
    backoff_max: Duration = 60.0


class _LineSettings(_Model):
    baudrate: Annotated[int, Field(ge=50, le=4_000_000)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class ModbusRtuSource(_SourceBase, _LineSettings):
    kind: Literal["modbus-rtu"]
    port: str
    devices: Annotated[list[ModbusDevice], Field(min_length=1)]


class ModbusTcpSource(_SourceBase):
    kind: Literal["modbus-tcp"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    devices: Annotated[list[ModbusDevice], Field(min_length=1)]


class ParseConfig(_Model):
    regex: str | None = None
    format: Literal["kv", "csv", "json"] | None = None
    fields: list[str] | None = None  # csv only: the column names, in order

    @property
    def kind(self) -> Literal["regex", "kv", "csv", "json"]:
        return "regex" if self.regex is not None else self.format or "kv"


class SerialPoint(_Model):
    name: Name
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0


class SerialSource(_SourceBase, _LineSettings):
    """A serial ASCII sensor: the source is its own single device, named like the source."""

    kind: Literal["serial"]
    port: str
    request: str | None = None  # poll mode when set; stream mode otherwise
    interval: Duration | None = None  # default: 10s in poll mode, 60s (staleness) in stream mode
    line_end: Annotated[str, Field(min_length=1, max_length=4)] = "\n"
    parse: ParseConfig
    points: Annotated[list[SerialPoint], Field(min_length=1)]

    @property
    def poll_interval(self) -> float:
        if self.interval is not None:
            return self.interval
        return 10.0 if self.request is not None else 60.0


Source = Annotated[ModbusRtuSource | ModbusTcpSource | SerialSource, Field(discriminator="kind")]


class AlarmRule(_Model):
    point: Annotated[str, Field(pattern=r"^[^/]+/[^/]+$")]  # "device/point"
    above: float | None = None
    below: float | None = None
    clear_below: float | None = None
    clear_above: float | None = None
    hold: Duration = 0.0
    priority: Literal["low", "normal", "high", "critical"] = "high"

    @property
    def name(self) -> str:
        """``aq-1/pm25>50``: how the alarm is named in its messages."""
        if self.above is not None:
            return f"{self.point}>{_number(self.above)}"
        return f"{self.point}<{_number(self.below or 0.0)}"


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


class Config(_Model):
    gateway: GatewaySection
    buffer: BufferConfig = BufferConfig()
    uplink: UplinkConfig
    status: StatusConfig = StatusConfig()
    sources: Annotated[list[Source], Field(min_length=1)]
    alarms: list[AlarmRule] = Field(default_factory=list)
    include: list[str] = Field(default_factory=list)

    def devices(self) -> Iterator[tuple[str, str]]:
        """(source name, device name) for every device; a serial source is its own device."""
        for source in self.sources:
            if isinstance(source, SerialSource):
                yield source.name, source.name
            else:
                for device in source.devices:
                    yield source.name, device.name

    def point_names(self) -> dict[str, set[str]]:
        """Device name -> its point names."""
        names: dict[str, set[str]] = {}
        for source in self.sources:
            if isinstance(source, SerialSource):
                names[source.name] = {p.name for p in source.points}
            else:
                for device in source.devices:
                    names[device.name] = {p.name for p in device.points}
        return names

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

    @property
    def status_host_port(self) -> tuple[str, int]:
        return split_listen(self.config.status.listen)


@dataclass
class _Origin:
    """Where each merged list item came from, so problems name the right file and index."""

    files: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def locate(self, main: str, loc: Sequence[str | int]) -> tuple[str, Sequence[str | int]]:
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


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read, merge, validate and cross-check a config file; raise ConfigError with every problem."""
    path = Path(path)
    main = str(path)
    raw, digest = _read_yaml(path, main)
    if not isinstance(raw, dict):
        raise ConfigError([f"{main}: the file must be a mapping with gateway, uplink and sources"])
    raw, origin, digest = _merge_includes(raw, path, digest)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(exc, main, origin)) from None
    config = _resolve_paths(config, path.parent, environ)
    problems = [_line(*origin.locate(main, loc), message) for loc, message in _cross_check(config)]
    if problems:
        raise ConfigError(problems)
    password = read_secret(config.uplink.password_file) if config.uplink.password_file else None
    token = read_secret(config.status.token_file) if config.status.token_file else None
    return LoadedConfig(
        config=config,
        path=path,
        warnings=[f"{main}: {w}" for w in _warnings(config)],
        digest=digest.hexdigest()[:16],
        mqtt_password=password,
        status_token=token,
    )


def read_secret(path: Path) -> str:
    """A secret file's content with surrounding whitespace stripped."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read secret: {exc}"]) from None


def _read_yaml(path: Path, shown: str) -> tuple[Any, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{shown}: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{shown}: cannot read: {exc.strerror}"]) from None
    digest = hashlib.sha256(data)
    try:
        return yaml.safe_load(data), digest
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{shown}: {where}YAML syntax error: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{shown}: YAML syntax error: {exc}"]) from None


def _merge_includes(
    raw: dict[str, Any], path: Path, digest: Any
) -> tuple[dict[str, Any], _Origin, Any]:
    """Append the ``sources`` and ``alarms`` of every included file, remembering their origin."""
    main = str(path)
    origin = _Origin()
    merged = dict(raw)
    for key in ("sources", "alarms"):
        items = raw.get(key)
        if isinstance(items, list):
            origin.files[key] = [(main, i) for i in range(len(items))]
    includes = raw.get("include") or []
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError([f"{main}: include: must be a list of file names or globs"])
    problems: list[str] = []
    for index, pattern in enumerate(includes):
        full = str(path.parent / pattern)
        matches = sorted(glob.glob(full))
        if not matches and not glob.has_magic(pattern):
            problems.append(f"{main}: include[{index}]: file not found: {full}")
        for match in matches:
            shown = str(match)
            part, part_digest = _read_yaml(Path(match), shown)
            digest.update(part_digest.digest())
            if part is None:
                continue
            if not isinstance(part, dict):
                problems.append(f"{shown}: an included file must be a mapping of sources/alarms")
                continue
            for key in sorted(set(part) - {"sources", "alarms"}):
                problems.append(
                    f"{shown}: {key}: an included file may only hold sources and alarms"
                )
            for key in ("sources", "alarms"):
                items = part.get(key) or []
                if not isinstance(items, list):
                    problems.append(f"{shown}: {key}: must be a list")
                    continue
                existing = merged.get(key) or []
                merged[key] = [*existing, *items] if isinstance(existing, list) else existing
                origin.files.setdefault(key, []).extend((shown, i) for i in range(len(items)))
    if problems:
        raise ConfigError(problems)
    return merged, origin, digest


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


def _line(file: str, loc: Sequence[str | int], message: str) -> str:
    return f"{file}: {_key_path(loc)}: {message}" if loc else f"{file}: {message}"


def _key_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_SOURCE_KINDS = {"modbus-rtu", "modbus-tcp", "serial"}


def _pydantic_problems(exc: ValidationError, main: str, origin: _Origin) -> list[str]:
    lines: list[str] = []
    for error in exc.errors():
        # A discriminated union puts the tag in the path: sources[1].modbus-rtu.devices -> drop it.
        raw = [p for i, p in enumerate(error["loc"]) if not (i == 2 and p in _SOURCE_KINDS)]
        file, loc = origin.locate(main, raw)
        line = _line(file, loc, _message(error))
        if line not in lines:
            lines.append(line)
    return lines


def _message(error: Mapping[str, Any]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{value!r} is not one of {expected}"
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "union_tag_invalid":
        return f"kind {ctx.get('tag')!r} is not one of modbus-rtu, modbus-tcp, serial"
    if kind == "union_tag_not_found":
        return "required key 'kind' is missing (modbus-rtu, modbus-tcp or serial)"
    if kind == "string_pattern_mismatch":
        return f"{value!r} does not match {ctx.get('pattern')}"
    if kind == "less_than_equal":
        return f"{value!r} is more than the maximum, {ctx.get('le')}"
    if kind == "greater_than_equal":
        return f"{value!r} is less than the minimum, {ctx.get('ge')}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return f"{error['msg'][0].lower()}{error['msg'][1:]} (got {value!r})"


# ---------------------------------------------------------------------------------------------
# Cross-field checks: (key path, message) pairs


Problem = tuple[tuple[str | int, ...], str]


def _cross_check(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    problems += _check_names(config)
    for i, source in enumerate(config.sources):
        loc: tuple[str | int, ...] = ("sources", i)
        if isinstance(source, SerialSource):
            problems += _check_serial(source, loc)
        else:
            for j, device in enumerate(source.devices):
                problems += _check_points(device, (*loc, "devices", j))
    problems += _check_alarms(config)
    if config.buffer.max_size < MIN_BUFFER_SIZE:
        problems.append(
            (("buffer", "max_size"),
             "must be at least 256KiB, or the buffer evicts samples as it stores them")
        )  # fmt: skip
    problems += _check_uplink(config)
    problems += _check_status(config)
    return problems


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
        devices: list[tuple[tuple[str | int, ...], str]]
        if isinstance(source, SerialSource):
            devices = [(("sources", i, "name"), source.name)]
        else:
            devices = [
                (("sources", i, "devices", j, "name"), d.name) for j, d in enumerate(source.devices)
            ]
        for loc, name in devices:
            if name in seen_devices:
                problems.append(
                    (loc, f"device name {name!r} is already used at {seen_devices[name]}")
                )
            seen_devices.setdefault(name, _key_path(loc[:-1]))
    return problems


def _duplicates(names: Sequence[str]) -> Iterator[tuple[int, str]]:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            yield index, name
        seen.add(name)


def _check_points(device: ModbusDevice, loc: tuple[str | int, ...]) -> list[Problem]:
    problems: list[Problem] = []
    for k, name in _duplicates([p.name for p in device.points]):
        problems.append(((*loc, "points", k, "name"), f"point name {name!r} is used twice"))
    whole: dict[tuple[str, int], int] = {}  # (table, address) -> index of a non-bit point
    bits: dict[tuple[str, int], dict[int, int]] = {}  # (table, address) -> {bit: point index}
    for k, point in enumerate(device.points):
        ploc = (*loc, "points", k)
        if point.is_bit_table and point.type != "bool":
            problems.append(
                ((*ploc, "type"),
                 f"a {point.table} table holds bits; type must be bool, not {point.type}")
            )  # fmt: skip
            continue
        if point.bit is not None and (point.type != "bool" or point.is_bit_table):
            problems.append(
                ((*ploc, "bit"), "bit is only for a bool point on an input or holding register")
            )
            continue
        if point.address + point.width > 65536:
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
                problems.append(
                    ((*ploc, "address"),
                     f"{point.name!r} overlaps {device.points[clash].name!r} (points[{clash}]) "
                     f"at {point.table} address {address}")
                )  # fmt: skip
                break
            if point.bit is None:
                whole[key] = k
            else:
                bits.setdefault(key, {})[point.bit] = k
    return problems


def _check_serial(source: SerialSource, loc: tuple[str | int, ...]) -> list[Problem]:
    problems: list[Problem] = []
    parse, ploc = source.parse, (*loc, "parse")
    for k, name in _duplicates([p.name for p in source.points]):
        problems.append(((*loc, "points", k, "name"), f"point name {name!r} is used twice"))
    points = [p.name for p in source.points]
    if (parse.regex is None) == (parse.format is None):
        problems.append((ploc, "give exactly one of regex or format (kv, csv, json)"))
        return problems
    if parse.fields is not None and parse.format != "csv":
        problems.append(((*ploc, "fields"), "fields goes only with format: csv"))
    if parse.regex is not None:
        try:
            groups = set(re.compile(parse.regex).groupindex)
        except re.error as exc:
            return [*problems, ((*ploc, "regex"), f"not a valid regular expression: {exc}")]
        missing = [p for p in points if p not in groups]
        if missing:
            problems.append(
                ((*ploc, "regex"),
                 f"no named group for point(s) {', '.join(missing)}; write (?P<name>...) for each")
            )  # fmt: skip
    elif parse.format == "csv":
        if not parse.fields:
            problems.append(
                ((*ploc, "fields"), "format: csv needs fields: the column names in order")
            )
        else:
            missing = [p for p in points if p not in parse.fields]
            if missing:
                problems.append(((*ploc, "fields"), f"no column for point(s) {', '.join(missing)}"))
    if source.request is not None and not source.request:
        problems.append(((*loc, "request"), "must not be empty; leave it out for stream mode"))
    return problems


def _check_alarms(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    points = config.point_names()
    for i, alarm in enumerate(config.alarms):
        loc: tuple[str | int, ...] = ("alarms", i)
        device, _, point = alarm.point.partition("/")
        if device not in points:
            close = difflib.get_close_matches(device, points, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(((*loc, "point"), f"no device named {device!r}{hint}"))
        elif point not in points[device]:
            problems.append(
                ((*loc, "point"),
                 f"device {device!r} has no point {point!r}; "
                 f"it has {', '.join(sorted(points[device]))}")
            )  # fmt: skip
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
                f"{prefix!r}: no wildcards (+ #) and no leading or trailing /",
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
    if uplink.batch.max_wait > 60:
        problems.append((("uplink", "batch", "max_wait"), "must be at most 60s"))
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
             f"{config.status.listen} is not a loopback address, so status.token_file is required")
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
        raise ValueError(f"{url!r}: the scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number from 1 to 65535") from None
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError(
            f"{url!r}: only scheme://host:port; credentials go in username/password_file"
        )
    scheme: Literal["mqtt", "mqtts"] = "mqtts" if parts.scheme == "mqtts" else "mqtt"
    return scheme, parts.hostname, port or (8883 if scheme == "mqtts" else 1883)


def split_listen(listen: str) -> tuple[str, int]:
    """``127.0.0.1:8470`` / ``[::1]:8470`` -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{listen!r} is not HOST:PORT, like 127.0.0.1:{DEFAULT_STATUS_PORT}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
