"""The configuration: frozen pydantic models of the YAML (docs/reference.md), and ``load_config``.

One job per module, in the order a file goes through them:

- ``reader``: the bounded YAML reader (size, depth, aliases, duplicate keys);
- ``includes``: ``include:`` merged, remembering which file each item came from;
- ``units``, ``models``: the value types (durations, sizes, names) and the models;
- ``kinds``: what the loader needs of the source kinds (:class:`Kinds`, the registry passed to
  ``load_config``) and the top-level :class:`Section` a kind may add (Modbus: ``templates``);
- ``checks``, ``secret_files``: the cross-field checks and warnings, and the secrets' files;
- ``messages``: a problem as one bounded line, ``FILE: key.path[0].x: what is wrong``;
- ``load``: ``load_config``, secrets and paths.

The names below are the config's API: ``from gateway.config import X``.
"""

from __future__ import annotations

from gateway.addresses import DEFAULT_STATUS_PORT, is_loopback, parse_server, split_listen
from gateway.config.base import ConfigModel
from gateway.config.checks import MAX_TOPIC_PREFIX, MIN_BUFFER_SIZE, duplicates
from gateway.config.includes import MAX_INCLUDED_FILES
from gateway.config.kinds import Kinds, Section
from gateway.config.load import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_STATE_DIR,
    LoadedConfig,
    default_config_path,
    load_config,
    state_dir,
)
from gateway.config.messages import MAX_LINE, MAX_PROBLEMS, Problem, key_path, seconds
from gateway.config.models import (
    MIN_INTERVAL,
    AlarmRule,
    BatchConfig,
    BufferConfig,
    Config,
    DeviceSpec,
    GatewaySection,
    LineSettings,
    PointSpec,
    ReportConfig,
    SecurityConfig,
    SourceConfig,
    SparkplugConfig,
    StatusConfig,
    TlsConfig,
    UplinkConfig,
    WhileRaised,
)
from gateway.config.reader import MAX_DEPTH, MAX_FILE_BYTES, MAX_VALUES
from gateway.config.secret_files import MAX_SECRET_BYTES, MIN_TOKEN_BYTES, read_secret
from gateway.config.units import (
    GATEWAY_ID_PATTERN,
    MAX_DURATION,
    MAX_SIZE,
    NAME_PATTERN,
    DevicePath,
    Duration,
    FilePath,
    Finite,
    Name,
    PointOffset,
    PointScale,
    Size,
    parse_duration,
    parse_size,
)
from gateway.quoting import QUOTE_LIMIT, quote

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_STATE_DIR",
    "DEFAULT_STATUS_PORT",
    "GATEWAY_ID_PATTERN",
    "MAX_DEPTH",
    "MAX_DURATION",
    "MAX_FILE_BYTES",
    "MAX_INCLUDED_FILES",
    "MAX_LINE",
    "MAX_PROBLEMS",
    "MAX_SECRET_BYTES",
    "MAX_SIZE",
    "MAX_TOPIC_PREFIX",
    "MAX_VALUES",
    "MIN_BUFFER_SIZE",
    "MIN_INTERVAL",
    "MIN_TOKEN_BYTES",
    "NAME_PATTERN",
    "QUOTE_LIMIT",
    "AlarmRule",
    "BatchConfig",
    "BufferConfig",
    "Config",
    "ConfigModel",
    "DevicePath",
    "DeviceSpec",
    "Duration",
    "FilePath",
    "Finite",
    "GatewaySection",
    "Kinds",
    "LineSettings",
    "LoadedConfig",
    "Name",
    "PointOffset",
    "PointScale",
    "PointSpec",
    "Problem",
    "ReportConfig",
    "Section",
    "SecurityConfig",
    "Size",
    "SourceConfig",
    "SparkplugConfig",
    "StatusConfig",
    "TlsConfig",
    "UplinkConfig",
    "WhileRaised",
    "default_config_path",
    "duplicates",
    "is_loopback",
    "key_path",
    "load_config",
    "parse_duration",
    "parse_server",
    "parse_size",
    "quote",
    "read_secret",
    "seconds",
    "split_listen",
    "state_dir",
]
