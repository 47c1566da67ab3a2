"""The uplink of a config: its wire format, looked up by ``uplink.format`` in :data:`FORMATS`.

A format is one entry of the table: a function from what the config and the daemon know to the
:class:`~gateway.uplink.wire.WireFormat` and, for a format whose connections are numbered
(Sparkplug's bdSeq), the durable counter of those numbers. A new format is one function and one
line in the table; nothing else names a format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway import __version__
from gateway.config import Config, LoadedConfig
from gateway.uplink.acks import BufferLike
from gateway.uplink.catalog import catalog_of
from gateway.uplink.compression import SamplesCompressor
from gateway.uplink.json_format import CommandSink, JsonFormat
from gateway.uplink.mqtt import Uplink
from gateway.uplink.wire import Catalog, CurrentValues, WireFormat


@dataclass(frozen=True, slots=True)
class FormatInputs:
    """What a format is made from."""

    config: Config
    catalog: Catalog
    buffer_path: Path  # a session counter's file lives beside the buffer
    started_ms: int
    current_values: CurrentValues
    clock_synced: Callable[[], bool]  # may the wall clock judge timestamps (Sparkplug STATE)
    commands: CommandSink | None = None  # the command channel, when the config has one
    device_states: Callable[[], Mapping[str, str]] | None = None  # Sparkplug's DDEATH/DBIRTH


@dataclass(frozen=True, slots=True)
class ChosenFormat:
    wire_format: WireFormat
    session_counter: Callable[[], int] | None = None  # blocking, durable: the next session's


def _json(made: FormatInputs) -> ChosenFormat:
    uplink = made.config.uplink
    return ChosenFormat(
        JsonFormat(
            made.catalog,
            topic_prefix=uplink.topic_prefix,
            qos=uplink.qos,
            version=__version__,
            started_ms=made.started_ms,
            commands=made.commands if made.config.commands is not None else None,
            compress=SamplesCompressor() if uplink.compression == "zstd" else None,
        )
    )


def _sparkplug_b(made: FormatInputs) -> ChosenFormat:
    # protobuf and the generated schema (~1.5 MB resident) only where Sparkplug is spoken
    from gateway.uplink.sparkplug.setup import bdseq_file, sparkplug_format  # noqa: PLC0415

    return ChosenFormat(
        sparkplug_format(
            made.config,
            made.catalog,
            made.current_values,
            made.clock_synced,
            commands=made.commands if made.config.commands else None,  # type: ignore[arg-type]
            device_states=made.device_states,
        ),
        session_counter=bdseq_file(made.buffer_path).advance,
    )


# uplink.format -> its maker; config.py's Literal names the same keys.
FORMATS: dict[str, Callable[[FormatInputs], ChosenFormat]] = {
    "json": _json,
    "sparkplug-b": _sparkplug_b,
}


def make_uplink(
    loaded: LoadedConfig,
    *,
    buffer: BufferLike,
    buffer_path: Path,
    started_ms: int,
    current_values: CurrentValues,
    clock_synced: Callable[[], bool],
    commands: CommandSink | None = None,
    device_states: Callable[[], Mapping[str, str]] | None = None,
    config_source: str = "local",
    identity: Mapping[str, str] | None = None,
) -> Uplink:
    config = loaded.config
    chosen = FORMATS[config.uplink.format](
        FormatInputs(
            config,
            catalog_of(config, loaded.digest, config_source, identity),
            buffer_path,
            started_ms,
            current_values,
            clock_synced,
            commands,
            device_states,
        )
    )
    return Uplink(
        config.uplink,
        gateway_id=config.gateway.id,
        client_id=config.client_id,
        buffer=buffer,
        password=loaded.mqtt_password,
        wire_format=chosen.wire_format,
        session_counter=chosen.session_counter,
    )
