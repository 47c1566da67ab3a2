"""A particulate device through the Sparkplug B wire format: its fixed points are born as
Doubles, and a sample's values come out in DDATA (the JSON format is covered
end to end by tests/e2e/test_e2e_particulate.py)."""

from __future__ import annotations

from pathlib import Path

from gateway.config import load_config
from gateway.model import Lane, Sample, StoredItem
from gateway.sources.registry import installed
from gateway.uplink.catalog import catalog_of
from gateway.uplink.sparkplug import sparkplug_b_pb2 as pb
from gateway.uplink.sparkplug.format import SparkplugFormat


def test_a_pms5003_is_a_sparkplug_device_with_double_metrics(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "gateway: {id: lamppost-1}\n"
        "uplink: {servers: ['mqtt://127.0.0.1:1883'], format: sparkplug-b,"
        " sparkplug: {group_id: city}}\n"
        "sources:\n"
        "  - {name: dust-1, kind: particulate, model: pms5003, port: /dev/ttyUSB0}\n"
    )
    config = load_config(path, installed()).config
    fmt = SparkplugFormat(
        catalog_of(config, "d1"),
        group_id="city",
        edge_node_id="lamppost-1",
        topic_prefix="p",
        current_values=lambda: {"dust-1": {"pm1": 4, "pm25": 5, "pm10": 8}},
    )
    fmt.begin(0)
    [dbirth] = [m for m in fmt.session_start() if "/DBIRTH/" in m.topic]
    assert dbirth.topic == "spBv1.0/city/DBIRTH/lamppost-1/dust-1"
    born = {m.name: m for m in pb.Payload.FromString(dbirth.payload).metrics}
    for name, value in {"pm1": 4, "pm25": 5, "pm10": 8}.items():
        assert born[name].datatype == pb.Double
        assert born[name].double_value == value
    aliases = {m.alias: m.name for m in born.values()}
    item = StoredItem(1, Lane.SAMPLE, 1000, Sample("dust-1", 1000, {"pm25": 12, "pm10": 20}))
    [ddata] = [m for m in fmt.samples([item], historical=False) if "/DDATA/" in m.topic]
    sent = {aliases[m.alias]: m.double_value for m in pb.Payload.FromString(ddata.payload).metrics
            if aliases.get(m.alias) in ("pm25", "pm10")}  # fmt: skip
    assert sent == {"pm25": 12.0, "pm10": 20.0}
