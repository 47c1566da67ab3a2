"""``load_config``: read, merge, validate and cross-check a config file, then read its secrets.

Every problem in a file becomes one line ``FILE: key.path[0].x: what is wrong``; a user
mistake never shows a traceback, and nothing else escapes either (a bug of ours is one line
too). The source kinds come from the caller (``installed()``, or the kinds the daemon runs), so
the config imports nothing of them.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from gateway.addresses import split_listen
from gateway.config.checks import cross_check, warnings
from gateway.config.includes import merge_includes
from gateway.config.kinds import Kinds
from gateway.config.messages import bounded, line, pydantic_problems
from gateway.config.models import Config
from gateway.config.reader import parse_yaml, read_file
from gateway.config.secret_files import read_secret
from gateway.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/street-gateway/gateway.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/street-gateway")


@dataclass(frozen=True)
class LoadedConfig:
    """A valid configuration with what the loader read beside it."""

    config: Config
    path: Path
    warnings: list[str] = field(default_factory=list)
    digest: str = ""  # sha256 of every file read, for the birth message
    mqtt_password: str | None = field(default=None, repr=False)
    status_token: str | None = field(default=None, repr=False)
    kinds: Kinds | None = field(default=None, repr=False)  # the source kinds it was read with

    @property
    def status_host_port(self) -> tuple[str, int]:
        return split_listen(self.config.status.listen)


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
    path: Path | str, kinds: Kinds, environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Read, merge, validate and cross-check a config file; raise ConfigError with every problem.

    ``kinds``: the source kinds to validate ``sources`` with (``installed()``: those of every
    installed distribution). Nothing else escapes, whatever the file holds: ``check``, ``run``
    and a reload all end in ConfigError's lines, each bounded (:func:`bounded`).
    """
    main = str(path)
    try:
        return _load(Path(path), environ, kinds)
    except ConfigError as exc:
        raise ConfigError(bounded(exc.problems, main)) from None
    except Exception as exc:  # a bug of ours must not crash a reload either
        problem = f"{main}: cannot check this file, an internal error: {type(exc).__name__}: {exc}"
        raise ConfigError(bounded([f"{problem} (please report it)"], main)) from None


def _load(path: Path, environ: Mapping[str, str] | None, kinds: Kinds) -> LoadedConfig:
    main = str(path)
    data = read_file(path, f"{main}: ")
    digest = hashlib.sha256(data)
    raw = parse_yaml(data, main)
    if not isinstance(raw, dict):
        raise ConfigError([f"{main}: the file must be a mapping with gateway, uplink and sources"])
    raw, origin = merge_includes(raw, path, digest, kinds.sections)
    locate = functools.partial(origin.locate, main)
    try:
        config = kinds.config_model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(pydantic_problems(exc, locate, kinds.kinds, kinds.unknown)) from None
    config = _resolve_paths(config, path.parent, environ)
    config = config.model_copy(update={"sources": [s.prepared(config) for s in config.sources]})
    problems = [line(*locate(loc), message) for loc, message in cross_check(config, kinds.sections)]
    problems = list(dict.fromkeys(problems))  # a template's problem once, not once per device
    if problems:
        raise ConfigError(problems)
    password = read_secret(config.uplink.password_file) if config.uplink.password_file else None
    token = read_secret(config.status.token_file) if config.status.token_file else None
    return LoadedConfig(
        config=config,
        path=path,
        warnings=[*(f"{main}: {w}" for w in warnings(config, kinds.sections)), *kinds.problems],
        digest=digest.hexdigest()[:16],
        mqtt_password=password,
        status_token=token,
        kinds=kinds,
    )


def _resolve_paths(config: Config, base: Path, environ: Mapping[str, str] | None) -> Config:
    """Make file paths relative to the config file's folder; default the buffer path."""

    def rel(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else base / p)

    buffer_path = rel(config.buffer.path) or state_dir(environ) / "buffer.db"
    # the state dir: beside the buffer (<state dir>/identity.key when the buffer is in its place)
    identity_key = rel(config.security.identity_key) or buffer_path.parent / "identity.key"
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
            "security": config.security.model_copy(update={"identity_key": identity_key}),
            "status": config.status.model_copy(
                update={"token_file": rel(config.status.token_file)}
            ),
        }
    )
