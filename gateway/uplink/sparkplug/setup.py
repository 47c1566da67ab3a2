"""The Sparkplug format and its bdSeq file, made from the config (for the uplink's builder)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.config import Config
from gateway.uplink.sparkplug.bdseq import BdSeqFile, bdseq_path
from gateway.uplink.sparkplug.device_life import States
from gateway.uplink.sparkplug.format import SparkplugFormat, WriteSink
from gateway.uplink.wire import Catalog, CurrentValues


def sparkplug_format(
    config: Config,
    catalog: Catalog,
    current_values: CurrentValues,
    clock_synced: Callable[[], bool],
    *,
    commands: WriteSink | None = None,
    device_states: States | None = None,
) -> SparkplugFormat:
    """``uplink.sparkplug`` as a format; the config was checked (group_id is there)."""
    uplink = config.uplink
    sp = uplink.sparkplug
    if sp is None:
        raise ValueError("uplink.format is sparkplug-b but uplink.sparkplug is missing")
    return SparkplugFormat(
        catalog,
        group_id=sp.group_id,
        edge_node_id=sp.edge_node_id or config.gateway.id,
        topic_prefix=uplink.topic_prefix,
        current_values=current_values,
        primary_host_id=sp.primary_host_id,
        checkpoint_qos=uplink.qos,
        clock_synced=clock_synced,
        commands=commands if sp.commands else None,
        device_states=device_states,
    )


def bdseq_file(buffer_path: Path) -> BdSeqFile:
    return BdSeqFile(bdseq_path(buffer_path))
