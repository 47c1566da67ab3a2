"""Seals over Sparkplug B, pure: a host that reads the messages with the standard's schema
(tests/sparkplug_support.py, never the gateway's module) rebuilds every item exactly as
``format: json`` publishes it, whatever the value and the point's datatype, and finds the key
the seals are signed with in NBIRTH (SPEC "Identity and seals", docs/transparency.md)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sparkplug_support import (
    STRING,
    Decoder,
    Host,
    compile_descriptor_set,
    rebuild_items,
)
from test_sparkplug_format import GROUP, NODE, born, catalog, feed, make

from gateway.keys import SigningKey
from gateway.model import AlarmEvent, CommandResult, Lane, Sample, StoredItem, Value
from gateway.seals.items import leaf_of, stored_leaf
from gateway.seals.status import identity_json
from gateway.uplink.json_format import samples_message
from gateway.uplink.sparkplug.format import SparkplugFormat
from gateway.uplink.wire import Catalog, DeviceInfo, Outgoing, PointInfo

BASE = "city/sensors/lamppost-0421"
# one point of each type a config can give, and how the Sparkplug format types it
POINTS = {
    "b": PointInfo("bool"),
    "i16": PointInfo("int16"),
    "u16": PointInfo("uint16"),
    "i32": PointInfo("int32"),
    "u32": PointInfo("uint32"),
    "i64": PointInfo("int64"),
    "u64": PointInfo("uint64"),
    "f32": PointInfo("float32"),
    "f64": PointInfo("float64"),
    "s": PointInfo("string"),
    "n": PointInfo("number"),  # a serial point: Double
    "counter": PointInfo("counter"),  # an SNMP Counter64: Double
    "u16_scaled": PointInfo("uint16", scaled=True),  # Float
    "u64_scaled": PointInfo("uint64", scaled=True),  # Double
}
IDENTITY = identity_json(SigningKey(bytes(range(32))).public)  # the published test key


def odd_catalog(identity: dict[str, str] | None = None) -> Catalog:
    return Catalog(
        gateway_id="lamppost-0421",
        config_digest="d1",
        devices=(DeviceInfo("odd-1", "odd-1", "plugin", 1.0, POINTS),),
        identity=identity,
    )


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Decoder:
    return Decoder(compile_descriptor_set(tmp_path_factory.mktemp("proto")))


def sample(seq: int, values: dict[str, Value], *, synced: bool = True) -> StoredItem:
    return StoredItem(seq, Lane.SAMPLE, 1000 + seq, Sample("odd-1", 1000 + seq, values, synced))


def published(item: StoredItem) -> dict[str, Any]:
    """The sample as ``format: json`` publishes it: what the seal's leaf is made of."""
    doc = json.loads(samples_message("lamppost-0421", [item], historical=False))
    return doc["samples"][0]  # type: ignore[no-any-return]


def through_sparkplug(decoder: Decoder, items: list[StoredItem]) -> tuple[Host, list[Any]]:
    """A host's view of these samples, and each sample rebuilt from it."""
    fmt = make(catalog=odd_catalog())
    host = born(decoder, fmt)
    feed(host, fmt.samples(items, historical=False))
    return host, [p["samples"][0] for _, p in rebuild_items(host, BASE)]


# -- values ------------------------------------------------------------------------------------

values = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.integers(min_value=-(2**16), max_value=2**32),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda x: round(x, 5)),
    st.booleans(),
    st.text(max_size=8),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=dict.fromkeys(POINTS, values)), st.booleans())
def test_a_host_rebuilds_every_value_of_every_datatype_exactly(
    decoder: Decoder, point_values: dict[str, Value], synced: bool
) -> None:
    """Whatever a source makes of a point (a plugin's values are not checked against its
    declared type), the rebuilt sample has the leaf of the published one: its seal verifies."""
    item = sample(7, point_values, synced=synced)
    _, (rebuilt,) = through_sparkplug(decoder, [item])
    assert leaf_of("sample", rebuilt) == leaf_of("sample", published(item))
    assert leaf_of("sample", rebuilt) == stored_leaf(item.seq, item.item)


ODD: list[tuple[str, Value, Value | None]] = [
    # point, the sample's value, what a Sparkplug consumer reads (None: is_null)
    ("u16", 70000, None),  # beyond the datatype's range: no wrong value
    ("u16", -1, None),
    ("i16", 40000, None),  # not the two's complement -25536
    ("u16", 12.5, None),  # a fraction in an integer
    ("i32", "open", None),  # text in a number
    ("b", "open", None),
    ("f32", 300.00001, 300.0),  # the float32 nearest
    ("u16_scaled", 12345.0001, 12345.0),
    ("counter", 2**53 + 1, float(2**53)),  # the double nearest
    ("u64_scaled", 2**64 + 1, float(2**64)),
    ("b", 2, True),
    ("s", 12, "12"),
    ("u64", 2**64, None),
    ("f32", 1e39, None),  # beyond the largest float32: not infinity
]


@pytest.mark.parametrize(("point", "value", "consumer"), ODD)
def test_a_value_its_datatype_cannot_hold_comes_with_its_json_text(
    decoder: Decoder, point: str, value: Value, consumer: Value | None
) -> None:
    item = sample(3, {point: value})
    host, (rebuilt,) = through_sparkplug(decoder, [item])
    (_, named, doc) = host.data[0]
    assert named[point] == consumer and type(named[point]) is type(consumer)
    metric = doc["metrics"][1]
    assert metric["properties"]["json"] == (STRING, json.dumps(value))
    assert rebuilt["values"] == {point: value} and type(rebuilt["values"][point]) is type(value)


FITTING: dict[str, Value] = {
    "b": True,
    "i16": -32768,
    "u16": 65535,
    "i32": -5,
    "u32": 2**32 - 1,
    "i64": -(2**63),
    "u64": 2**64 - 1,
    "f32": 12.3,  # as the decoders make a float32: its shortest digits
    "f64": 0.1,
    "s": "X1",
    "n": 2**53 - 1,
    "counter": 123,
    "u16_scaled": 16777216,  # an integer scale keeps an int; a float32 holds it
    "u64_scaled": 1.5e300,
}


def test_a_value_its_datatype_holds_travels_as_before_without_a_property(
    decoder: Decoder,
) -> None:
    item = sample(4, FITTING)
    host, (rebuilt,) = through_sparkplug(decoder, [item])
    (_, named, doc) = host.data[0]
    assert [m["properties"] for m in doc["metrics"]] == [{}] * (1 + len(FITTING))
    assert rebuilt["values"] == FITTING
    consumer = {k: v for k, v in named.items() if k != "sgw/seq"}
    assert consumer == FITTING | {"f32": pytest.approx(12.3)}  # a float32 as it is


def test_a_value_that_does_not_fit_is_logged_once_per_point(
    decoder: Decoder, caplog: pytest.LogCaptureFixture
) -> None:
    items = [sample(s, {"u16": 70000 + s, "f32": 300.00001 + s, "u32": s}) for s in (1, 2, 3)]
    with caplog.at_level(logging.WARNING):
        through_sparkplug(decoder, items)
    assert [r.getMessage() for r in caplog.records] == [
        "sparkplug: odd-1/u16 value 70001 does not fit its datatype: sent null, its JSON text "
        "in the property 'json'",
        "sparkplug: odd-1/f32 value 301.00001 does not fit its datatype: sent rounded, its JSON "
        "text in the property 'json'",
    ]


def test_dbirth_current_values_that_do_not_fit_come_with_their_json_text(
    decoder: Decoder,
) -> None:
    fmt = SparkplugFormat(
        odd_catalog(),
        group_id=GROUP,
        edge_node_id=NODE,
        topic_prefix="city/sensors",
        current_values=lambda: {"odd-1": {"u16": 70000, "f32": 12.3}},
    )
    fmt.begin(1)
    _, dbirth = fmt.session_start()
    metrics = {m["name"]: m for m in decoder.decode(dbirth.payload)["metrics"]}
    assert metrics["u16"]["is_null"] and metrics["u16"]["properties"] == {"json": (STRING, "70000")}
    assert metrics["f32"]["raw"] == pytest.approx(12.3) and metrics["f32"]["properties"] == {}


# -- the other items ---------------------------------------------------------------------------


def test_alarms_results_and_gaps_are_rebuilt_exactly_even_of_a_rule_gone(
    decoder: Decoder,
) -> None:
    """An alarm whose rule left the config (``sgw/alarm`` = "<rule> <state>"), one of a rule
    still there, and a command's result."""
    fmt = make(catalog=catalog(alarms=("aq-1/pm25>50",)))
    host = born(decoder, fmt)
    gone = AlarmEvent("aq-1/pm10>80", "raised", 81.5, "high", 2000)
    kept = AlarmEvent("aq-1/pm25>50", "cleared", 49.0, "low", 2001)
    result = CommandResult(
        "c-1", "ops-centre", "write", "aq-1", "pm25", 40, "done", None, 40, "", 2002
    )
    stored = [
        StoredItem(10, Lane.ALARM, 2000, gone),
        StoredItem(11, Lane.ALARM, 2001, kept),
        StoredItem(12, Lane.ALARM, 2002, result),
    ]
    for item in stored:
        feed(host, fmt.alarm(item))
    rebuilt = rebuild_items(host, BASE)
    assert [t.rsplit("/", 1)[1] for t, _ in rebuilt] == ["alarms", "alarms", "results"]
    for (topic, obj), item in zip(rebuilt, stored, strict=True):
        kind = "result" if topic.endswith("results") else "alarm"
        assert leaf_of(kind, obj) == stored_leaf(item.seq, item.item)


def test_samples_of_a_device_or_point_gone_by_a_reload_are_rebuilt_exactly(
    decoder: Decoder,
) -> None:
    """Stored before a reload removed their device or point: no metric carries those values,
    the sgw/seq metric's properties do."""
    fmt = make(catalog=odd_catalog())
    host = born(decoder, fmt)
    stored = [
        StoredItem(5, Lane.SAMPLE, 1005, Sample("gone-1", 1005, {"x": 1.5, "s": "a"}, False)),
        StoredItem(6, Lane.SAMPLE, 1006, Sample("gone-2", 1006, {})),
        sample(7, {"u16": 3, "old": 2**60, "older": "b"}, synced=False),
    ]
    feed(host, fmt.samples(stored, historical=True))
    rebuilt = [p["samples"][0] for _, p in rebuild_items(host, BASE)]
    assert [s["device"] for s in rebuilt] == ["gone-1", "gone-2", "odd-1"]
    for obj, item in zip(rebuilt, stored, strict=True):
        assert leaf_of("sample", obj) == leaf_of("sample", published(item))


# -- the identity ------------------------------------------------------------------------------


def nbirth(decoder: Decoder, catalog: Catalog) -> tuple[Host, dict[str, dict[str, Any]]]:
    fmt = make(catalog=catalog)
    host = born(decoder, fmt)
    metrics = decoder.decode(fmt.session_start()[0].payload)["metrics"]
    return host, {m["name"]: m for m in metrics}


def test_nbirth_carries_the_identity_the_seals_are_signed_with(decoder: Decoder) -> None:
    host, metrics = nbirth(decoder, odd_catalog(IDENTITY))
    identity = {key: host.values[None, f"sgw/identity/{key}"] for key in IDENTITY}
    assert (
        identity
        == IDENTITY
        == {
            "alg": "Ed25519",
            "public_key": "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=",  # docs/transparency.md
            "fingerprint": "sha256:"
            "56475aa75463474c0285df5dbf2bcab73da651358839e9b77481b2eab107708c",
        }
    )
    assert {metrics[f"sgw/identity/{key}"]["datatype"] for key in IDENTITY} == {STRING}


def test_the_identity_adds_metrics_and_keeps_every_other_alias(decoder: Decoder) -> None:
    _, without = nbirth(decoder, odd_catalog())
    _, with_identity = nbirth(decoder, odd_catalog(IDENTITY))
    assert not any(name.startswith("sgw/identity/") for name in without)
    added = {name: m for name, m in with_identity.items() if name not in without}
    assert set(added) == {f"sgw/identity/{key}" for key in IDENTITY}
    assert all(with_identity[name]["alias"] == m["alias"] for name, m in without.items())
    assert len({m["alias"] for m in with_identity.values()}) == len(with_identity)


def test_a_rebirth_and_a_reload_birth_with_the_configs_identity(decoder: Decoder) -> None:
    def identity(messages: list[Outgoing]) -> dict[str, str]:
        (birth,) = [m for m in messages if "/NBIRTH/" in m.topic]
        metrics = decoder.decode(birth.payload)["metrics"]
        return {m["name"]: m["raw"] for m in metrics if m["name"].startswith("sgw/identity/")}

    fmt = make(catalog=odd_catalog(IDENTITY))
    ours = identity(fmt.session_start())
    assert ours == {f"sgw/identity/{key}": value for key, value in IDENTITY.items()}
    assert identity(fmt.on_message(fmt.topic_ncmd, decoder.encode_rebirth())) == ours
    other = identity_json(SigningKey(bytes(32)).public)
    assert (
        identity(fmt.catalog_changed(odd_catalog(other)))["sgw/identity/public_key"]
        == (other["public_key"])
    )
    assert identity(fmt.catalog_changed(odd_catalog())) == {}
