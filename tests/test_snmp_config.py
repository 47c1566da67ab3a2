"""The snmp kind's config: its keys through the real loader (key paths in every problem), the
key files' checks, what meta and Sparkplug say of its points, and the pure value conversion
with golden vectors of pysnmp's own types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pysnmp.proto import rfc1902, rfc1905
from snmp_support import secret_file

from gateway.config import load_config
from gateway.errors import ConfigError, ParseError
from gateway.model import Lane, Sample, StoredItem
from gateway.sources.registry import installed
from gateway.sources.snmp.config import SnmpSource
from gateway.sources.snmp.values import convert
from gateway.uplink.catalog import catalog_of
from gateway.uplink.json_format import meta_message
from gateway.uplink.sparkplug import sparkplug_b_pb2 as pb
from gateway.uplink.sparkplug.format import SparkplugFormat
from gateway.uplink.sparkplug.metrics import datatype_for

README = Path(__file__).resolve().parent.parent / "gateway" / "sources" / "snmp" / "README.md"


def gateway_yaml(tmp_path: Path, source: dict[str, Any], **extra: Any) -> Path:
    data = {
        "gateway": {"id": "cabinet-7"},
        "uplink": {"servers": ["mqtt://127.0.0.1:1883"]},
        "sources": [source],
        **extra,
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def ups(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    source: dict[str, Any] = {
        "name": "ups-1",
        "kind": "snmp",
        "host": "10.20.0.5",
        "community_file": str(secret_file(tmp_path / "community", "cabinet-ro")),
        "points": [
            {"name": "on_battery", "oid": "1.3.6.1.2.1.33.1.4.1.0", "type": "int"},
            {"name": "charge", "oid": ".1.3.6.1.2.1.33.1.2.4.0", "type": "gauge", "unit": "%"},
            {"name": "volts", "oid": "1.3.6.1.2.1.33.1.2.5.0", "type": "gauge", "scale": 0.1},
            {"name": "octets", "oid": "1.3.6.1.2.1.2.2.1.10.1", "type": "counter"},
            {"name": "model", "oid": "1.3.6.1.2.1.33.1.1.2.0", "type": "string"},
        ],
    }
    source.update(overrides)
    return source


def problems(tmp_path: Path, source: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(gateway_yaml(tmp_path, source), installed())
    return caught.value.problems


def test_a_v2c_source_loads_with_its_defaults(tmp_path: Path) -> None:
    loaded = load_config(gateway_yaml(tmp_path, ups(tmp_path)), installed())
    source = loaded.config.sources[0]
    assert isinstance(source, SnmpSource)
    assert (source.port, source.version, source.interval) == (161, "2c", 10.0)
    assert source.points[1].dotted == "1.3.6.1.2.1.33.1.2.4.0"
    assert source.describe() == "10.20.0.5:161"
    assert "cabinet-ro" not in repr(loaded)  # the community is read at start, never kept here


def test_a_v3_source_needs_user_auth_and_priv(tmp_path: Path) -> None:
    found = problems(tmp_path, ups(tmp_path, version="3"))
    assert any("sources[0].community_file: version 3 uses user" in p for p in found)
    for key in ("user", "auth", "priv"):
        assert any(f"sources[0].{key}: version 3 needs {key}" in p for p in found), found


def test_v3_key_files_are_checked_for_mode_and_length(tmp_path: Path) -> None:
    loose = secret_file(tmp_path / "auth", "auth-pass-1")
    loose.chmod(0o644)
    short = secret_file(tmp_path / "priv", "short")
    source = ups(
        tmp_path,
        version="3",
        community_file=None,
        user="ups",
        auth={"protocol": "SHA512", "key_file": str(loose)},
        priv={"protocol": "AES256", "key_file": str(short)},
    )
    found = problems(tmp_path, source)
    assert any("sources[0].auth.key_file:" in p and "chmod 600" in p for p in found), found
    assert any("sources[0].priv.key_file:" in p and "fewer than 8" in p for p in found), found


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"community_file": None}, "sources[0].community_file: version 2c needs community_file"),
        ({"community_file": "community"}, "write an absolute path"),
        ({"community_file": "/nonexistent/community"}, "file not found"),
        ({"user": "ups"}, "sources[0].user: user goes with version: '3'"),
        ({"version": "1"}, "sources[0].version"),
        ({"port": 0}, "sources[0].port"),
    ],
)
def test_bad_credentials_name_their_key(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    found = problems(tmp_path, ups(tmp_path, **change))
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        ({"oid": "1.3.6.x"}, "sources[0].points[0].oid"),
        ({"oid": "1"}, "sources[0].points[0].oid"),
        ({"type": "float"}, "sources[0].points[0].type"),
        ({"type": "counter", "scale": 8}, "sources[0].points[0].scale: scale goes with int or"),
        ({"type": "string", "scale": 2}, "sources[0].points[0].scale"),
        # the second of two is named: the first one stands
        ({"name": "charge"}, "sources[0].points[1].name: point name 'charge' is used twice"),
        (
            {"oid": ".1.3.6.1.2.1.33.1.2.4.0"},
            "points[1].oid: OID .1.3.6.1.2.1.33.1.2.4.0 is already read as 'on_battery'",
        ),
    ],
)
def test_bad_points_name_their_key(tmp_path: Path, point: dict[str, Any], expected: str) -> None:
    source = ups(tmp_path)
    source["points"] = [{**source["points"][0], **point}, *source["points"][1:]]
    found = problems(tmp_path, source)
    assert any(expected in p for p in found), found


def test_an_alarm_on_an_snmp_point_is_checked_like_any_other(tmp_path: Path) -> None:
    path = gateway_yaml(tmp_path, ups(tmp_path), alarms=[{"point": "ups-1/on_battery", "above": 4}])
    assert load_config(path, installed()).config.alarms[0].point == "ups-1/on_battery"
    path = gateway_yaml(tmp_path, ups(tmp_path), alarms=[{"point": "ups-1/nope", "above": 4}])
    with pytest.raises(ConfigError, match="nope"):
        load_config(path, installed())


def test_meta_gives_the_snmp_type_and_sparkplug_a_fitting_datatype(tmp_path: Path) -> None:
    loaded = load_config(gateway_yaml(tmp_path, ups(tmp_path)), installed())
    catalog = catalog_of(loaded.config, "digest")
    meta = yaml.safe_load(meta_message(catalog))  # JSON is YAML
    points = meta["devices"]["ups-1"]["points"]
    assert meta["devices"]["ups-1"]["kind"] == "snmp"
    assert points["on_battery"] == {"type": "int"}
    assert points["charge"] == {"type": "gauge", "unit": "%"}
    assert points["octets"] == {"type": "counter"}
    assert points["model"] == {"type": "string"}


def test_sparkplug_carries_an_snmp_sample_string_and_numbers(tmp_path: Path) -> None:
    loaded = load_config(gateway_yaml(tmp_path, ups(tmp_path)), installed())
    fmt = SparkplugFormat(
        catalog_of(loaded.config, "digest"),
        group_id="city",
        edge_node_id="cabinet-7",
        topic_prefix="city",
        current_values=dict,
    )
    fmt.begin(0)
    fmt.session_start()
    values = {"on_battery": 5, "charge": 88, "volts": 27.1, "octets": 2**40 + 1, "model": "UPS"}
    item = StoredItem(1, Lane.SAMPLE, 1000, Sample("ups-1", 1000, values))
    (data,) = [m for m in fmt.samples([item], historical=False) if "/DDATA/" in m.topic]
    payload = pb.Payload()
    payload.ParseFromString(data.payload)
    sent = [
        m.string_value if m.HasField("string_value") else m.double_value
        for m in payload.metrics
        if not m.HasField("long_value")  # the device's sgw/seq
    ]
    assert sent == [5.0, 88.0, 27.1, float(2**40 + 1), "UPS"]  # in point order
    assert datatype_for("string") == (pb.String, "string_value")
    assert datatype_for("counter") == (pb.Double, "double_value")  # exact up to 2**53


def test_the_readme_sample_is_a_valid_source(tmp_path: Path) -> None:
    text = README.read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    sources = yaml.safe_load(block)["sources"]
    for source in sources:  # the key files are the operator's: here, made for the check
        for holder in (source, source.get("auth") or {}, source.get("priv") or {}):
            for key in ("community_file", "key_file"):
                if key in holder:
                    name = Path(holder[key]).name
                    holder[key] = str(secret_file(tmp_path / name, "readme-passphrase"))
    path = tmp_path / "gateway.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "gateway": {"id": "cabinet-7"},
                "uplink": {"servers": ["mqtt://127.0.0.1:1883"]},
                "sources": sources,
                "alarms": yaml.safe_load(block).get("alarms", []),
            }
        )
    )
    assert {s.kind for s in load_config(path, installed()).config.sources} == {"snmp"}


# -- values: golden vectors of pysnmp's own types ---------------------------------------------

INT32 = rfc1902.Integer32


@pytest.mark.parametrize(
    ("point_type", "scale", "value", "expected"),
    [
        ("int", None, INT32(-40), -40),
        ("int", None, rfc1902.Integer(5), 5),
        ("gauge", None, rfc1902.Gauge32(4294967295), 4294967295),
        ("gauge", 0.1, INT32(273), pytest.approx(27.3)),
        ("gauge", None, rfc1902.TimeTicks(123456), 123456),
        ("gauge", None, rfc1902.OctetString("23.5"), 23.5),  # DisplayString numbers
        ("int", None, rfc1902.OctetString(" 42\0"), 42),
        ("counter", None, rfc1902.Counter32(4294967295), 4294967295),
        ("counter", None, rfc1902.Counter64(2**64 - 1), 2**64 - 1),
        ("string", None, rfc1902.OctetString("Smart-UPS 1500"), "Smart-UPS 1500"),
        ("string", None, rfc1902.OctetString("padded\0\0"), "padded"),
        ("string", None, rfc1902.OctetString(b"\x00\x1b\x2c\xff"), "00:1b:2c:ff"),
        ("string", None, rfc1902.IpAddress("10.20.0.5"), "10.20.0.5"),
        ("string", None, rfc1902.ObjectIdentifier("1.3.6.1.4.1.318"), "1.3.6.1.4.1.318"),
        ("string", None, rfc1902.Counter32(7), "7"),
    ],
)
def test_values_convert_by_their_snmp_type(
    point_type: str, scale: float | None, value: Any, expected: Any
) -> None:
    result = convert(point_type, scale, value)
    assert result == expected
    if point_type == "counter":
        assert type(result) is int


@pytest.mark.parametrize(
    ("point_type", "value", "reason"),
    [
        ("int", rfc1905.noSuchObject, "no such object"),
        ("gauge", rfc1905.noSuchInstance, "no such instance"),
        ("string", rfc1905.endOfMibView, "end of the agent's MIB view"),
        ("counter", rfc1902.OctetString("12"), "an OctetString, not a number"),
        ("gauge", rfc1902.OctetString("nan"), "not a finite number"),
        ("gauge", rfc1902.OctetString("on battery"), "not a number"),
        ("int", rfc1902.IpAddress("10.0.0.1"), "an IpAddress, not a number"),
        ("string", rfc1902.OctetString(b"x" * 1025), "over the 1024"),
    ],
)
def test_values_that_do_not_fit_are_parse_errors(point_type: str, value: Any, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        convert(point_type, None, value)
