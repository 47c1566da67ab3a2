"""An sdi12 device's points in both wire formats, from the kind's README config: ``meta`` (JSON)
describes them as numbers with their units; Sparkplug B births them as Doubles and carries a
measurement's values, read back by an independent decoder (tests/sparkplug_support.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sparkplug_support import DOUBLE, Decoder, Host, compile_descriptor_set

from gateway.config import load_config
from gateway.model import Lane, Sample, StoredItem
from gateway.sources.registry import installed
from gateway.uplink.catalog import catalog_of
from gateway.uplink.json_format import JsonFormat
from gateway.uplink.sparkplug.format import SparkplugFormat
from gateway.uplink.wire import Catalog

README = Path(__file__).parent.parent / "gateway" / "sources" / "sdi12" / "README.md"
GROUP, NODE = "city", "lamppost-1"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    (block,) = re.findall(r"^```yaml\n(.*?)^```$", README.read_text(), re.M | re.S)
    path = tmp_path_factory.mktemp("sdi12") / "gateway.yaml"
    path.write_text(
        "gateway: {id: lamppost-1}\nuplink: {servers: ['mqtt://127.0.0.1:1883']}\n" + block
    )
    return catalog_of(load_config(path, installed()).config, "digest")


def test_meta_describes_the_points_as_numbers_with_their_units(catalog: Catalog) -> None:
    fmt = JsonFormat(catalog, topic_prefix="p", qos=1, version="0", started_ms=1)
    (meta,) = [m for m in fmt.session_start() if m.topic.endswith("/meta")]
    devices = json.loads(meta.payload)["devices"]
    assert devices["river-1"] == {
        "source": "river-bus",
        "kind": "sdi12",
        "interval_s": 60,
        "points": {
            "level": {"type": "number", "unit": "m"},
            "water_temp": {"type": "number", "unit": "C"},
            "battery": {"type": "number", "unit": "V"},
        },
    }
    assert devices["rain-1"]["points"] == {"rain": {"type": "number", "unit": "mm"}}


def test_sparkplug_births_doubles_and_carries_a_measurement(
    catalog: Catalog, tmp_path: Path
) -> None:
    decoder = Decoder(compile_descriptor_set(tmp_path))
    fmt = SparkplugFormat(
        catalog,
        group_id=GROUP,
        edge_node_id=NODE,
        topic_prefix="p",
        current_values=dict,
        clock_ms=lambda: 1_764_000_000_000,
    )
    fmt.begin(1)
    host = Host(decoder, GROUP, NODE)
    births = fmt.session_start()
    for message in births:
        host.feed(message.topic, message.payload)
    (birth,) = [m for m in births if m.topic.endswith("/DBIRTH/lamppost-1/river-1")]
    metrics = {m["name"]: m["datatype"] for m in decoder.decode(birth.payload)["metrics"]}
    assert {metrics[name] for name in ("level", "water_temp", "battery")} == {DOUBLE}
    values = {"level": 3.512, "water_temp": 11.5, "battery": 12.6}
    item = StoredItem(1, Lane.SAMPLE, 1000, Sample("river-1", 1000, dict(values)))
    for message in fmt.samples([item], historical=False):
        if message.topic.startswith("spBv1.0/"):
            host.feed(message.topic, message.payload)
    assert {name: host.values["river-1", name] for name in values} == values
