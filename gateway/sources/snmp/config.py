"""The config of the ``snmp`` kind: one SNMP agent (a UPS, a router, a PDU), its credentials
and its points, with their cross-field checks. Pure: the key files are checked here (present,
a regular file, not readable by group or others, a passphrase of the right length) and read
when the source starts (:func:`read_key`)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from gateway.sources.plugin import (
    ConfigModel,
    DeviceSpec,
    Duration,
    Name,
    PointSpec,
    Problem,
    ReportConfig,
    SourceConfig,
)

# Dotted decimal, a leading dot allowed (net-snmp prints one); at most 128 arcs (RFC 2578).
OID_PATTERN = r"^\.?[0-2](\.(0|[1-9][0-9]{0,9})){1,127}$"
MIN_PASSPHRASE = 8  # RFC 3414 11.2: a USM passphrase has at least 8 characters
MAX_KEY_BYTES = 64 * 1024

# The point types and what ``meta`` says of each: the SNMP type, as configured.
PointType = Literal["int", "gauge", "counter", "string"]


class SnmpPoint(ConfigModel):
    name: Name
    oid: Annotated[str, Field(pattern=OID_PATTERN)]
    type: PointType
    scale: Annotated[float, Field(allow_inf_nan=False)] | None = None
    unit: str | None = None
    report: ReportConfig | None = None

    @property
    def dotted(self) -> str:
        """The OID without its leading dot, as the source asks for it."""
        return self.oid.lstrip(".")

    def spec(self) -> PointSpec:
        scaled = self.scale is not None and self.scale != 1
        exact = self.type == "string" or not scaled  # an integer is sent on any change
        return PointSpec(self.name, self.type, self.unit, scaled, self.report, exact)


class SnmpAuth(ConfigModel):
    protocol: Literal["SHA", "SHA256", "SHA512"] = "SHA"
    key_file: Path


class SnmpPriv(ConfigModel):
    protocol: Literal["AES", "AES256"] = "AES"
    key_file: Path


class SnmpSource(SourceConfig):
    """One SNMP agent: the source is its own single device, named like the source."""

    kind: Literal["snmp"]
    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = 161
    version: Literal["2c", "3"] = "2c"
    community_file: Path | None = None  # v2c
    user: Annotated[str, Field(min_length=1, max_length=32)] | None = None  # v3, authPriv
    auth: SnmpAuth | None = None
    priv: SnmpPriv | None = None
    interval: Duration = 10.0
    points: Annotated[list[SnmpPoint], Field(min_length=1)]
    report: ReportConfig | None = None  # the default of its points

    def device_specs(self) -> list[DeviceSpec]:
        points = tuple(p.spec() for p in self.points)
        return [
            DeviceSpec(
                self.name,
                self.interval,
                points,
                report=self.report,
                summary=f"SNMP v{self.version}",
            )
        ]

    def check(self, loc: tuple[str | int, ...], config: Any) -> list[Problem]:
        return _check_points(self, loc) + _check_credentials(self, loc)

    def describe(self) -> str:
        return f"{self.host}:{self.port}"


def _check_points(source: SnmpSource, loc: tuple[str | int, ...]) -> list[Problem]:
    problems: list[Problem] = []
    names: dict[str, int] = {}
    oids: dict[str, str] = {}
    for k, point in enumerate(source.points):
        ploc = (*loc, "points", k)
        if point.name in names:
            problems.append(((*ploc, "name"), f"point name {point.name!r} is used twice"))
        names.setdefault(point.name, k)
        if point.dotted in oids:
            problems.append(
                ((*ploc, "oid"), f"OID {point.oid} is already read as {oids[point.dotted]!r}")
            )
        oids.setdefault(point.dotted, point.name)
        if point.scale is not None and point.type in ("counter", "string"):
            why = "a counter is sent raw" if point.type == "counter" else "a string has none"
            problems.append(((*ploc, "scale"), f"scale goes with int or gauge only: {why}"))
    return problems


def _check_credentials(source: SnmpSource, loc: tuple[str | int, ...]) -> list[Problem]:
    if source.version == "2c":
        problems = [
            ((*loc, key), f"{key} goes with version: '3'; version 2c uses community_file")
            for key in ("user", "auth", "priv")
            if getattr(source, key) is not None
        ]
        if source.community_file is None:
            return [*problems, ((*loc, "community_file"), "version 2c needs community_file")]
        return problems + _check_key_file(source.community_file, (*loc, "community_file"), 1)
    problems = []
    if source.community_file is not None:
        problems.append(
            ((*loc, "community_file"), "version 3 uses user, auth and priv, not a community")
        )
    for key in ("user", "auth", "priv"):  # authPriv only: a cabinet's traffic crosses the street
        if getattr(source, key) is None:
            problems.append(((*loc, key), f"version 3 needs {key} (authPriv: user, auth, priv)"))
    for key, part in (("auth", source.auth), ("priv", source.priv)):
        if part is not None:
            kloc = (*loc, key, "key_file")
            problems += _check_key_file(part.key_file, kloc, MIN_PASSPHRASE)
    return problems


def _check_key_file(path: Path, loc: tuple[str | int, ...], min_length: int) -> list[Problem]:
    """A secret file: absolute, a regular file, private, holding a passphrase long enough."""
    if not path.is_absolute():
        return [(loc, f"{path}: write an absolute path (the daemon does not run in this folder)")]
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return [(loc, f"file not found: {path}")]
    except OSError as exc:
        return [(loc, f"cannot read {path}: {exc.strerror}")]
    except ValueError:  # a NUL in the name
        return [(loc, f"{str(path)!r} is not a file name")]
    if not stat.S_ISREG(mode):
        return [(loc, f"{path} is not a regular file")]
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return [
            (loc, f"{path} is readable by group or others (mode {stat.S_IMODE(mode):o}); "
                  "chmod 600 it")
        ]  # fmt: skip
    try:
        secret = read_key(path)
    except ValueError as exc:
        return [(loc, str(exc))]
    if len(secret) < min_length:
        need = "is empty" if min_length == 1 else f"holds fewer than {min_length} characters"
        return [(loc, f"{path} {need}; it holds the passphrase on one line")]
    return []


def read_key(path: Path) -> str:
    """A key file's passphrase (or community), surrounding whitespace stripped; ValueError
    with a printable reason when it cannot be read."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KEY_BYTES + 1)
        if len(data) > MAX_KEY_BYTES:
            raise ValueError(f"{path}: a key file holds one line, not over 64KiB")
        return data.decode("utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
