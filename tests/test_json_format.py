"""Wire format v2 in JSON (``gateway/uplink/json_format.py``): golden payloads of every topic,
the session's messages, and what the link meter counts. All pure: no broker here."""

from __future__ import annotations

import enum
import json
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.model import AlarmEvent, Gap, Lane, Sample, StoredItem, Value
from gateway.uplink.json_format import (
    SHUTDOWN_MESSAGE,
    WILL_MESSAGE,
    JsonFormat,
    Topics,
    alarm_message,
    birth_message,
    gap_message,
    meta_message,
    sample_json,
    samples_message,
)
from gateway.uplink.meter import WINDOW_S, LinkMeter, publish_size
from gateway.uplink.wire import Catalog, DeviceInfo, Outgoing, PointInfo

TS = 1764169200123

CATALOG = Catalog(
    gateway_id="gw-1",
    config_digest="sha256:abc",
    devices=(
        DeviceInfo("aq-1", "rs485-1", "modbus-rtu", 10.0, {
            "pm25": PointInfo("uint16", "ug/m3"),
            "temp": PointInfo("float32", "C"),
            "door": PointInfo("bool"),  # no unit configured
        }),
        DeviceInfo("noise-1", "noise-1", "serial", 0.5, {"laeq": PointInfo("number", "dBA")}),
        DeviceInfo("cab-1", "tcp-1", "modbus-tcp", 60, {"model": PointInfo("string")}),
    ),
    alarms=("aq-1/pm25>50",),
)  # fmt: skip


def stored(seq: int, item: Sample | AlarmEvent) -> StoredItem:
    lane = Lane.ALARM if isinstance(item, AlarmEvent) else Lane.SAMPLE
    return StoredItem(seq, lane, item.ts_ms, item)


def json_format(catalog: Catalog = CATALOG, qos: int = 1) -> JsonFormat:
    return JsonFormat(catalog, topic_prefix="city", qos=qos, version="0.2.0", started_ms=TS - 5)


# ---------------------------------------------------------------------------------------------
# Golden payloads


def test_topics_of_a_gateway() -> None:
    assert Topics.for_gateway("city/sensors", "gw-1") == Topics(
        samples="city/sensors/gw-1/samples",
        alarms="city/sensors/gw-1/alarms",
        gaps="city/sensors/gw-1/gaps",
        status="city/sensors/gw-1/status",
        meta="city/sensors/gw-1/meta",
        results="city/sensors/gw-1/results",
        commands="city/sensors/gw-1/commands",
    )


def test_a_samples_message_is_the_golden_payload() -> None:
    items = [
        stored(1042, Sample("aq-1", TS, {"pm25": 12.3, "temp": 21.5, "door": False})),
        stored(1043, Sample("cab-1", TS + 7, {"model": 'SDM "630"', "hours": 12345})),
    ]
    assert samples_message("gw-1", items, historical=False) == (
        b'{"gateway":"gw-1","samples":['
        b'{"seq":1042,"ts":1764169200123,"device":"aq-1",'
        b'"values":{"pm25":12.3,"temp":21.5,"door":false}},'
        b'{"seq":1043,"ts":1764169200130,"device":"cab-1",'
        b'"values":{"model":"SDM \\"630\\"","hours":12345}}]}'
    )


def test_a_backlog_message_says_historical_and_an_unsynced_sample_says_so() -> None:
    items = [
        stored(7, Sample("aq-1", 1000, {"pm25": 1}, clock_synced=False)),
        stored(9, Sample("aq-1", 2000, {"pm25": 2})),
    ]
    assert samples_message("gw-1", items, historical=True) == (
        b'{"gateway":"gw-1","samples":['
        b'{"seq":7,"ts":1000,"device":"aq-1","values":{"pm25":1},"clock":"unsynced"},'
        b'{"seq":9,"ts":2000,"device":"aq-1","values":{"pm25":2}}],"historical":true}'
    )


def test_an_alarm_and_a_gap_are_the_golden_payloads() -> None:
    event = AlarmEvent("aq-1/pm25>50", "raised", 63.0, "high", TS)
    assert alarm_message("gw-1", 1044, event) == (
        b'{"gateway":"gw-1","seq":1044,"ts":1764169200123,"alarm":"aq-1/pm25>50",'
        b'"state":"raised","value":63.0,"priority":"high"}'
    )
    assert gap_message("gw-1", Gap(3, 100, 149, 50, "max_size")) == (
        b'{"gateway":"gw-1","from_seq":100,"to_seq":149,"count":50,"reason":"max_size"}'
    )


def test_birth_will_and_goodbye_are_the_golden_payloads() -> None:
    assert birth_message("0.2.0", TS, "sha256:abc") == (
        b'{"state":"online","version":"0.2.0","started":1764169200123,"config_digest":"sha256:abc",'
        b'"config_source":"local"}'
    )
    assert WILL_MESSAGE == b'{"state":"offline"}'
    assert SHUTDOWN_MESSAGE == b'{"state":"offline","reason":"shutdown"}'


def test_meta_is_the_golden_payload() -> None:
    """Units and types once: ``unit`` absent when not configured, ``interval_s`` an integer when
    whole, devices and points in config order."""
    assert meta_message(CATALOG) == (
        b'{"config_digest":"sha256:abc","devices":{'
        b'"aq-1":{"source":"rs485-1","kind":"modbus-rtu","interval_s":10,"points":{'
        b'"pm25":{"type":"uint16","unit":"ug/m3"},"temp":{"type":"float32","unit":"C"},'
        b'"door":{"type":"bool"}}},'
        b'"noise-1":{"source":"noise-1","kind":"serial","interval_s":0.5,"points":{'
        b'"laeq":{"type":"number","unit":"dBA"}}},'
        b'"cab-1":{"source":"tcp-1","kind":"modbus-tcp","interval_s":60,"points":{'
        b'"model":{"type":"string"}}}}}'
    )
    decoded = json.loads(meta_message(CATALOG))
    assert type(decoded["devices"]["aq-1"]["interval_s"]) is int
    assert list(decoded["devices"]) == ["aq-1", "noise-1", "cab-1"]


def test_non_ascii_names_are_written_as_utf8() -> None:
    sample = Sample("capteur-é", 1, {"µg": 1.5, "état": "ouvert"})
    payload = samples_message("passerelle-ü", [stored(1, sample)], historical=False)
    assert "capteur-é".encode() in payload and "passerelle-ü".encode() in payload
    assert json.loads(payload)["samples"][0]["values"] == {"µg": 1.5, "état": "ouvert"}


# ---------------------------------------------------------------------------------------------
# The hand-written sample text is exactly what the JSON encoder writes


def encoder_sample(seq: int, s: Sample) -> str:
    """A sample as json.dumps writes it (SPEC.md's field order; clock only when unsynced)."""
    body: dict[str, object] = {"seq": seq, "ts": s.ts_ms, "device": s.device, "values": s.values}
    if not s.clock_synced:
        body["clock"] = "unsynced"
    return json.dumps(body, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


names = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["aq-1", 'a"b', "back\\slash", "new\nline", "\x00\x1f\x7f", "\u2028\u2029", "µg/m³", "°C"]
)
values = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.booleans()
    | names
    | st.sampled_from([1e-7, 1e16, 1e22, -0.0, 0.1, 5e-324, 1.7976931348623157e308, 2**53 + 1])
)
samples = st.builds(
    Sample,
    device=names,
    ts_ms=st.integers(0, 2**63 - 1),
    values=st.dictionaries(names, values, max_size=5),
    clock_synced=st.booleans(),
)


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 2**63 - 1), samples)
@example(1, Sample("d", 1, {"p": 1e-7, "q": "µg/m³"}, clock_synced=False))
@example(2, Sample("d", 1, {}))
def test_sample_text_is_what_the_json_encoder_writes(seq: int, sample: Sample) -> None:
    text = sample_json(seq, sample)
    assert text == encoder_sample(seq, sample)
    decoded = json.loads(text)
    assert (decoded["seq"], decoded["ts"], decoded["device"]) == (seq, sample.ts_ms, sample.device)
    assert decoded["values"] == sample.values
    assert [type(v) for v in decoded["values"].values()] == [
        type(v) for v in sample.values.values()
    ]
    assert decoded.get("clock") == (None if sample.clock_synced else "unsynced")


@settings(max_examples=100, deadline=None)
@given(st.lists(samples, max_size=5), st.booleans())
def test_a_samples_message_is_what_the_json_encoder_writes(
    batch: list[Sample], historical: bool
) -> None:
    items = [stored(seq, s) for seq, s in enumerate(batch, start=1)]
    decoded = json.loads(samples_message("gw-1", items, historical=historical))
    expected = [json.loads(encoder_sample(seq, s)) for seq, s in enumerate(batch, start=1)]
    assert decoded == {"gateway": "gw-1", "samples": expected} | (
        {"historical": True} if historical else {}
    )


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_value_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        sample_json(1, Sample("d", 1, {"ok": 1, "p": value}))


class Level(enum.IntEnum):
    HIGH = 3


def test_unusual_value_types_are_written_as_the_encoder_writes_them() -> None:
    level: Value = Level.HIGH
    for sample in (Sample("d", 1, {"p": level}), Sample("d", 2, {"p": 1, "q": ""})):
        assert sample_json(5, sample) == encoder_sample(5, sample)


# ---------------------------------------------------------------------------------------------
# The session: what JsonFormat hands the uplink


def test_a_session_starts_with_the_retained_birth_then_the_retained_meta() -> None:
    fmt = json_format()
    assert fmt.will() == Outgoing("city/gw-1/status", WILL_MESSAGE, 1, retain=True)
    assert fmt.session_start() == [
        Outgoing("city/gw-1/status", birth_message("0.2.0", TS - 5, "sha256:abc"), 1, retain=True),
        Outgoing("city/gw-1/meta", meta_message(CATALOG), 1, retain=True),
    ]
    # the same on every connection, and it settles no seq
    assert fmt.session_start() == fmt.session_start()
    assert all(not m.seqs and not m.gap_ids for m in fmt.session_start())
    assert fmt.goodbye() == [Outgoing("city/gw-1/status", SHUTDOWN_MESSAGE, 1, retain=True)]
    assert (fmt.subscriptions(), fmt.on_message("x", b"y")) == ([], [])


@pytest.mark.parametrize("qos", [0, 1])
def test_samples_alarms_and_gaps_become_messages_that_settle_their_seqs(qos: int) -> None:
    fmt = json_format(qos=qos)
    items = [stored(5, Sample("aq-1", 1, {"pm25": 1})), stored(6, Sample("aq-1", 2, {"pm25": 2}))]
    (message,) = fmt.samples(items, historical=True)
    assert message == Outgoing(
        "city/gw-1/samples",
        samples_message("gw-1", items, historical=True),
        qos,
        seqs=(5, 6),
        samples=2,
    )
    event = AlarmEvent("aq-1/pm25>50", "cleared", 40.0, "normal", 3)
    # alarms and gaps go at QoS 1 whatever uplink.qos says
    assert fmt.alarm(stored(7, event)) == [
        Outgoing("city/gw-1/alarms", alarm_message("gw-1", 7, event), 1, seqs=(7,), alarms=1)
    ]
    gap = Gap(2, 1, 4, 4, "unclean_shutdown")
    assert fmt.gap(gap) == [Outgoing("city/gw-1/gaps", gap_message("gw-1", gap), 1, gap_ids=(2,))]


def test_a_reload_sends_the_birth_again_and_meta_only_when_it_changed() -> None:
    fmt = json_format()
    birth = Outgoing("city/gw-1/status", birth_message("0.2.0", TS - 5, "sha256:abc"), 1,
                     retain=True)  # fmt: skip
    # the same catalog: the birth again, no meta
    assert fmt.catalog_changed(CATALOG) == [birth]
    # another point unit: the new meta follows the birth
    aq, *others = CATALOG.devices
    aq_points = aq.points | {"pm25": PointInfo("uint16", "mg/m3")}
    changed = Catalog(
        "gw-1", "sha256:def", (DeviceInfo("aq-1", "rs485-1", "modbus-rtu", 10.0, aq_points),
                               *others)
    )  # fmt: skip
    new_birth = Outgoing("city/gw-1/status", birth_message("0.2.0", TS - 5, "sha256:def"), 1,
                         retain=True)  # fmt: skip
    assert fmt.catalog_changed(changed) == [
        new_birth,
        Outgoing("city/gw-1/meta", meta_message(changed), 1, retain=True),
    ]
    assert b'"unit":"mg/m3"' in meta_message(changed)
    # the same again: nothing new to describe; and the next connection starts with the new one
    assert fmt.catalog_changed(changed) == [new_birth]
    assert fmt.session_start()[1].payload == meta_message(changed)


def test_a_new_digest_alone_sends_meta_again_since_meta_names_the_digest() -> None:
    fmt = json_format()
    renamed = Catalog("gw-1", "sha256:new", CATALOG.devices, (*CATALOG.alarms, "x/y<1"))
    messages = fmt.catalog_changed(renamed)
    assert [m.topic for m in messages] == ["city/gw-1/status", "city/gw-1/meta"]
    assert json.loads(messages[1].payload)["config_digest"] == "sha256:new"


# ---------------------------------------------------------------------------------------------
# What the link costs


def remaining_length(n: int) -> bytes:
    """MQTT 3.1.1 section 2.2.3: the variable length encoding, 7 bits a byte."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: str, payload: bytes, qos: int, packet_id: int = 1) -> bytes:
    """An MQTT 3.1.1 PUBLISH packet (section 3.3), byte by byte."""
    name = topic.encode()
    variable = len(name).to_bytes(2, "big") + name
    if qos:
        variable += packet_id.to_bytes(2, "big")
    body = variable + payload
    return bytes([0x30 | qos << 1]) + remaining_length(len(body)) + body


def test_a_small_publish_packet_is_counted_byte_for_byte() -> None:
    packet = b"\x32\x0b\x00\x05a/b/c\x00\x01xy"  # QoS 1: header, length 11, topic, id, payload
    assert publish_packet("a/b/c", b"xy", 1) == packet
    assert publish_size("a/b/c", b"xy", 1) == len(packet) == 13
    assert publish_size("a/b/c", b"xy", 0) == 11  # QoS 0: no packet id


@pytest.mark.parametrize(
    ("remaining", "length_bytes"),
    [(22, 1), (127, 1), (128, 2), (16383, 2), (16384, 3), (2_097_151, 3), (2_097_152, 4)],
)
@pytest.mark.parametrize("qos", [0, 1])
def test_publish_size_is_the_packet_size_across_length_boundaries(
    remaining: int, length_bytes: int, qos: int
) -> None:
    """The remaining length takes 1 byte up to 127, 2 up to 16383, 3 up to 2097151."""
    topic = "city/gw-µ/samples"  # 18 bytes: the topic is counted in UTF-8 bytes, not characters
    payload = b"x" * (remaining - 2 - 18 - (2 if qos else 0))
    packet = publish_packet(topic, payload, qos)
    assert len(packet) == 1 + length_bytes + remaining
    assert publish_size(topic, payload, qos) == len(packet)


def test_the_link_meter_before_anything_is_sent() -> None:
    meter = LinkMeter()
    assert (meter.bytes_total, meter.per_hour(100.0), meter.per_sample(100.0)) == (0, 0, None)


def test_the_link_meter_at_a_steady_rate() -> None:
    """100 B a second, 4 samples each, for two minutes: 360 kB an hour, 25 B per sample."""
    meter = LinkMeter()
    for second in range(1000, 1120):
        meter.record(second + 0.5, 80, 4)
        meter.record(second + 0.6, 20, 0)  # a message without samples (birth, meta) counts too
    assert meter.bytes_total == 120 * 100
    assert meter.per_hour(1120.0) == 360_000
    assert meter.per_sample(1120.0) == 25.0


def test_the_link_meter_follows_the_last_minute_not_the_day() -> None:
    meter = LinkMeter()
    meter.record(0.0, 1_000_000, 10)  # a backlog drained at start
    for second in range(1, 200):
        meter.record(float(second), 10, 1)
    assert meter.per_hour(200.0) == 36_000  # 10 B/s
    assert meter.per_sample(200.0) == 10.0
    assert meter.bytes_total == 1_000_000 + 199 * 10


def test_the_link_meter_falls_to_nothing_when_the_link_goes_quiet() -> None:
    meter = LinkMeter()
    meter.record(10.0, 500, 5)
    meter.record(10.9, 500, 5)  # the same second
    assert meter.per_hour(40.0) == 1000 * 3600 // 30
    assert meter.per_sample(40.0) == 100.0
    assert meter.per_hour(10.0 + WINDOW_S + 1) == 0
    assert meter.per_sample(10.0 + WINDOW_S + 1) is None
    assert meter.bytes_total == 1000  # the total stays


def test_the_first_second_is_not_divided_by_less_than_a_second() -> None:
    meter = LinkMeter()
    meter.record(5.25, 100, 1)
    assert meter.per_hour(5.25) == 360_000  # 100 B over one second, not over 0 s
    assert meter.per_sample(5.25) == 100.0
