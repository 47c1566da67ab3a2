"""The Sparkplug B format, read back by an independent decoder (tests/sparkplug_support.py):
births, aliases, datatypes, data by exception, seq wrap, gaps, alarms, rebirth, primary host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from sparkplug_support import (
    BOOLEAN,
    DOUBLE,
    FLOAT,
    INT16,
    INT64,
    STRING,
    UINT16,
    UINT64,
    Decoder,
    Host,
    compile_descriptor_set,
)

from gateway.model import AlarmEvent, CommandResult, Gap, Lane, Sample, StoredItem, Value
from gateway.uplink.sparkplug import sparkplug_b_pb2
from gateway.uplink.sparkplug.format import SparkplugFormat
from gateway.uplink.sparkplug.metrics import STATE_AHEAD_MS, alarm_metric
from gateway.uplink.sparkplug.rebirth import RebirthPacer
from gateway.uplink.wire import Catalog, DeviceInfo, Outgoing, PointInfo, Reconnect, Refused

GROUP, NODE = "city-sensors", "lamppost-0421"
README = Path(sparkplug_b_pb2.__file__).with_name("README.md")


@pytest.fixture(scope="session")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return compile_descriptor_set(tmp_path_factory.mktemp("proto"))


@pytest.fixture(scope="session")
def decoder(descriptor_set: bytes) -> Decoder:
    return Decoder(descriptor_set)


def catalog(alarms: tuple[str, ...] = ("aq-1/pm25>50", "noise-1/laeq<20")) -> Catalog:
    return Catalog(
        gateway_id="lamppost-0421",
        config_digest="d1",
        devices=(
            DeviceInfo(
                "aq-1",
                "rs485-1",
                "modbus-rtu",
                10.0,
                {
                    "pm25": PointInfo("uint16", "ug/m3"),
                    "temp": PointInfo("float32", "C"),
                    "door": PointInfo("bool"),
                    "delta": PointInfo("int16"),
                    "energy": PointInfo("uint64"),
                    "volts": PointInfo("uint16", "V", scaled=True),
                    "meter": PointInfo("uint32", "kWh", scaled=True),
                    "serial": PointInfo("string"),
                },
            ),
            DeviceInfo("noise-1", "noise-1", "serial", 5.0, {"laeq": PointInfo("number", "dBA")}),
        ),
        alarms=alarms,
    )


CURRENT: dict[str, dict[str, Value]] = {
    "aq-1": {
        "pm25": 12,
        "temp": 21.5,
        "door": False,
        "delta": -5,
        "volts": 230.4,
        "serial": "X1",
        "meter": 123456.78,
    },
    "noise-1": {"laeq": 55.5},
}


def make(primary: str | None = None, clock: list[int] | None = None, **kw: Any) -> SparkplugFormat:
    ticks = clock if clock is not None else [1_764_000_000_000]
    fmt = SparkplugFormat(
        kw.pop("catalog", catalog()),
        group_id=GROUP,
        edge_node_id=NODE,
        topic_prefix="city/sensors",
        current_values=lambda: CURRENT,
        primary_host_id=primary,
        clock_ms=lambda: ticks[0],
        **kw,
    )
    fmt.begin(7)
    return fmt


def sample(seq: int, device: str = "aq-1", **values: Value) -> StoredItem:
    return StoredItem(seq, Lane.SAMPLE, 1000 + seq, Sample(device, 1000 + seq, values))


def feed(host: Host, messages: list[Outgoing]) -> list[Outgoing]:
    """Feed the Sparkplug messages to the host; return the others (checkpoints)."""
    rest = []
    for msg in messages:
        if msg.topic.startswith("spBv1.0/"):
            assert msg.qos == (1 if "/NDEATH/" in msg.topic else 0) and not msg.retain
            host.feed(msg.topic, msg.payload)
        else:
            rest.append(msg)
    return rest


def born(decoder: Decoder, fmt: SparkplugFormat) -> Host:
    host = Host(decoder, GROUP, NODE)
    assert feed(host, fmt.session_start()) == []
    return host


# -- the checked-in gencode -------------------------------------------------------------------


def test_checked_in_module_matches_the_standards_proto(descriptor_set: bytes) -> None:
    """Fails when sparkplug_b.proto changed and sparkplug_b_pb2.py was not regenerated."""
    fresh = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file[0]
    checked_in = descriptor_pb2.FileDescriptorProto.FromString(
        sparkplug_b_pb2.DESCRIPTOR.serialized_pb
    )
    _drop_json_names(fresh)  # derived from the field names; Python gencode leaves them out
    assert checked_in == fresh, "regenerate sparkplug_b_pb2.py: see " + str(README)


def _drop_json_names(file: descriptor_pb2.FileDescriptorProto) -> None:
    def walk(message: descriptor_pb2.DescriptorProto) -> None:
        for f in message.field:
            f.ClearField("json_name")
        for nested in message.nested_type:
            walk(nested)

    for message in file.message_type:
        walk(message)


def test_protobuf_runtime_loads_the_module_without_a_warning() -> None:
    """The gencode's version check passes on this runtime (a warning is an error here too)."""
    code = "import gateway.uplink.sparkplug.sparkplug_b_pb2 as m; print(m.Payload.DESCRIPTOR.name)"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "Payload", done.stderr
    protoc = sparkplug_b_pb2.__file__
    header = Path(protoc).read_text().splitlines()[:6]
    version = next(line.split(":")[1].strip() for line in header if "Python Version" in line)
    assert version in README.read_text(), f"README.md does not say gencode {version}"


# -- births -----------------------------------------------------------------------------------


def test_will_is_ndeath_with_bdseq_int64_at_qos1(decoder: Decoder) -> None:
    fmt = make()
    will = fmt.will()
    assert (will.topic, will.qos, will.retain) == (f"spBv1.0/{GROUP}/NDEATH/{NODE}", 1, False)
    doc = decoder.decode(will.payload)
    assert doc["seq"] is None
    assert [(m["name"], m["datatype"], m["raw"]) for m in doc["metrics"]] == [("bdSeq", INT64, 7)]
    with pytest.raises(ValueError, match=r"0\.\.255"):
        fmt.begin(256)


def test_nbirth_then_every_dbirth_with_names_aliases_datatypes_and_values(
    decoder: Decoder,
) -> None:
    fmt = make()
    assert not fmt.ready()
    births = fmt.session_start()
    assert fmt.ready()
    assert [m.topic for m in births] == [
        f"spBv1.0/{GROUP}/NBIRTH/{NODE}",
        f"spBv1.0/{GROUP}/DBIRTH/{NODE}/aq-1",
        f"spBv1.0/{GROUP}/DBIRTH/{NODE}/noise-1",
    ]
    node = decoder.decode(births[0].payload)
    assert node["seq"] == 0
    metrics = {m["name"]: m for m in node["metrics"]}
    assert (metrics["bdSeq"]["datatype"], metrics["bdSeq"]["raw"]) == (INT64, 7)
    rebirth = metrics["Node Control/Rebirth"]
    assert (rebirth["datatype"], rebirth["raw"], rebirth["alias"]) == (BOOLEAN, False, None)
    assert metrics["sgw/gap"]["datatype"] == STRING
    assert metrics["alarm/aq-1/pm25/above"]["datatype"] == STRING
    assert metrics["alarm/noise-1/laeq/below"]["datatype"] == STRING
    assert all(m["timestamp"] is not None for m in node["metrics"])

    host = Host(decoder, GROUP, NODE)
    feed(host, births)
    assert host.seq_breaks == 0 and host.bd_seq == 7
    dev = {m["name"]: m for m in decoder.decode(births[1].payload)["metrics"]}
    assert {name: m["datatype"] for name, m in dev.items()} == {
        "sgw/seq": UINT64,
        "pm25": UINT16,
        "temp": FLOAT,
        "door": BOOLEAN,
        "delta": INT16,
        "energy": UINT64,
        "volts": FLOAT,  # a scaled integer is not an integer
        "meter": DOUBLE,  # nor a wide one, which a float32 would round
        "serial": STRING,
    }
    assert all(m["alias"] is not None for m in dev.values())
    assert host.values["aq-1", "pm25"] == 12
    assert host.values["aq-1", "temp"] == 21.5
    assert host.values["aq-1", "delta"] == -5
    assert host.values["aq-1", "volts"] == pytest.approx(230.4, rel=1e-7)  # a float32
    assert host.values["aq-1", "meter"] == 123456.78
    assert host.values["aq-1", "serial"] == "X1"
    assert dev["energy"]["is_null"] and dev["energy"]["field"] is None  # no current value
    assert dev["sgw/seq"]["is_null"]
    assert host.values["noise-1", "laeq"] == 55.5


def test_aliases_are_unique_across_the_node_and_stable_for_a_catalog(decoder: Decoder) -> None:
    def alias_table(fmt: SparkplugFormat) -> dict[tuple[str, str], int]:
        table = {}
        for msg in fmt.session_start():
            device = msg.topic.split("/")[4] if "/DBIRTH/" in msg.topic else ""
            for m in decoder.decode(msg.payload)["metrics"]:
                if m["alias"] is not None:
                    table[device, m["name"]] = m["alias"]
        return table

    first, second = alias_table(make()), alias_table(make())
    assert first == second
    assert len(set(first.values())) == len(first)  # unique over node and devices
    assert ("aq-1", "sgw/seq") in first and ("noise-1", "sgw/seq") in first


def test_alarm_metric_names() -> None:
    assert alarm_metric("aq-1/pm25>50") == "alarm/aq-1/pm25/above"
    assert alarm_metric("river-1/level<0.5") == "alarm/river-1/level/below"
    assert alarm_metric("nonsense") is None


# -- data -------------------------------------------------------------------------------------


def test_one_ddata_per_sample_by_exception_then_a_qos1_checkpoint(decoder: Decoder) -> None:
    fmt = make()
    host = born(decoder, fmt)
    out = fmt.samples(
        [sample(41, pm25=13, temp=21.75), sample(42, "noise-1", laeq=60.0), sample(43, delta=-300)],
        historical=False,
    )
    rest = feed(host, out)
    assert [m.topic.split("/")[2:] for m in out[:3]] == [
        ["DDATA", NODE, "aq-1"], ["DDATA", NODE, "noise-1"], ["DDATA", NODE, "aq-1"]
    ]  # fmt: skip
    assert host.seq_breaks == 0
    assert [(dev, named) for dev, named, _ in host.data] == [
        ("aq-1", {"sgw/seq": 41, "pm25": 13, "temp": 21.75}),
        ("noise-1", {"sgw/seq": 42, "laeq": 60.0}),
        ("aq-1", {"sgw/seq": 43, "delta": -300}),  # only what the sample holds
    ]
    first = host.data[0][2]["metrics"]
    assert all(m["timestamp"] == 1041 and not m["is_historical"] for m in first)
    (checkpoint,) = rest
    assert checkpoint.topic == "city/sensors/lamppost-0421/checkpoint"
    assert (checkpoint.qos, checkpoint.payload, checkpoint.seqs) == (1, b"43", (41, 42, 43))
    assert checkpoint.samples == 3
    assert all(m.seqs == () for m in out[:3])  # QoS 0 data settle nothing themselves


def test_historical_samples_flag_every_metric(decoder: Decoder) -> None:
    fmt = make()
    host = born(decoder, fmt)
    feed(host, fmt.samples([sample(5, pm25=1, door=True)], historical=True))
    metrics = host.data[0][2]["metrics"]
    assert len(metrics) == 3 and all(m["is_historical"] for m in metrics)
    assert host.data[0][1] == {"sgw/seq": 5, "pm25": 1, "door": True}


def test_seq_wraps_at_255_across_every_message_of_the_session(decoder: Decoder) -> None:
    fmt = make()
    host = born(decoder, fmt)  # NBIRTH 0, DBIRTH 1, 2
    seqs = []
    for n in range(1, 301):
        out = fmt.samples([sample(n, pm25=n)], historical=False)
        seqs.append(decoder.decode(out[0].payload)["seq"])
        feed(host, out)
        if n % 100 == 0:
            feed(host, fmt.gap(Gap(n, 10_000 + n, 10_000 + n, 1, "max_age")))
    assert host.seq_breaks == 0
    assert seqs[:3] == [3, 4, 5] and seqs[250:253] == [255, 0, 1]  # 2 gaps took 2 seqs
    assert max(seqs) == 255 and min(seqs) == 0
    assert [named["sgw/seq"] for _, named, _ in host.data if "sgw/seq" in named] == list(
        range(1, 301)
    )


def test_a_gap_is_ndata_sgw_gap_and_its_checkpoint_settles_the_gap(decoder: Decoder) -> None:
    fmt = make()
    host = born(decoder, fmt)
    out = fmt.gap(Gap(gap_id=9, from_seq=100, to_seq=180, count=81, reason="max_size"))
    (checkpoint,) = feed(host, out)
    assert out[0].topic == f"spBv1.0/{GROUP}/NDATA/{NODE}"
    assert host.data[-1][1] == {"sgw/gap": "100-180:max_size"}
    assert (checkpoint.gap_ids, checkpoint.seqs, checkpoint.qos) == ((9,), (), 1)


def test_an_alarm_is_ndata_with_its_state_and_seq_property(decoder: Decoder) -> None:
    fmt = make()
    host = born(decoder, fmt)
    event = AlarmEvent("aq-1/pm25>50", "raised", 63.0, "high", 5000)
    (checkpoint,) = feed(host, fmt.alarm(StoredItem(77, Lane.ALARM, 5000, event)))
    assert host.data[-1][1] == {"alarm/aq-1/pm25/above": "raised"}
    (metric,) = host.data[-1][2]["metrics"]
    assert metric["properties"]["seq"] == (UINT64, 77)
    assert metric["properties"]["priority"] == (STRING, "high")
    assert metric["timestamp"] == 5000
    assert (checkpoint.seqs, checkpoint.alarms, checkpoint.payload) == ((77,), 1, b"77")
    # The next birth carries the alarm's state as the metric's current value.
    feed(host, fmt.on_message(fmt.topic_ncmd, host.decoder.encode_rebirth()))
    assert host.values[None, "alarm/aq-1/pm25/above"] == "raised"


def test_a_result_is_ndata_sgw_result_with_its_json_and_seq_property(decoder: Decoder) -> None:
    fmt = make()
    host = born(decoder, fmt)
    result = CommandResult(
        "alarm-77-0", "alarm:aq-1/pm25>50", "write", "aq-1", "fan", True, "done", None, True,
        "", 5001,
    )  # fmt: skip
    (checkpoint,) = feed(host, fmt.alarm(StoredItem(78, Lane.ALARM, 5001, result)))
    doc = json.loads(host.data[-1][1]["sgw/result"])
    assert (doc["seq"], doc["id"], doc["state"], doc["read_back"]) == (
        78,
        "alarm-77-0",
        "done",
        True,
    )
    (metric,) = host.data[-1][2]["metrics"]
    assert metric["properties"]["seq"] == (UINT64, 78)
    assert (checkpoint.seqs, checkpoint.alarms) == ((78,), 1)


def test_values_that_do_not_fit_their_type_are_null_not_wrong(decoder: Decoder) -> None:
    fmt = make()
    host = born(decoder, fmt)
    feed(host, fmt.samples([sample(1, pm25=12.5, door="open", temp=1.5)], historical=False))
    assert host.data[0][1] == {"sgw/seq": 1, "pm25": None, "door": None, "temp": 1.5}


def test_a_device_or_point_no_longer_configured_keeps_its_seq(decoder: Decoder) -> None:
    fmt = make()
    host = born(decoder, fmt)
    out = fmt.samples([sample(3, "gone-1", x=1.0), sample(4, pm25=2, old=5)], historical=False)
    feed(host, out)
    assert out[0].topic == f"spBv1.0/{GROUP}/NDATA/{NODE}"
    assert [named for _, named, _ in host.data] == [{"sgw/seq": 3}, {"sgw/seq": 4, "pm25": 2}]
    assert out[-1].seqs == (3, 4)
    # and their values, as JSON properties of sgw/seq (docs/transparency.md: for seals)
    props = [doc["metrics"][0]["properties"] for _, _, doc in host.data]
    assert props == [
        {"device": (STRING, "gone-1"), "values": (STRING, '{"x":1.0}')},
        {"values": (STRING, '{"old":5}')},
    ]


# -- commands and the primary host --------------------------------------------------------------


def test_rebirth_resends_nbirth_with_the_same_bdseq_and_every_dbirth(decoder: Decoder) -> None:
    fmt = make()
    host = born(decoder, fmt)
    feed(host, fmt.samples([sample(1, pm25=99)], historical=False))
    assert fmt.on_message(fmt.topic_ncmd, decoder.encode_rebirth(False)) == []
    with pytest.raises(Refused, match="malformed"):  # counted and logged by the inbound guard
        fmt.on_message(fmt.topic_ncmd, b"\xff\xff not protobuf")
    again = fmt.on_message(fmt.topic_ncmd, decoder.encode_rebirth())
    assert [m.topic.split("/")[2] for m in again] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    feed(host, again)
    assert host.births == 2 and host.bd_seq == 7 and host.seq_breaks == 0
    assert host.values["aq-1", "sgw/seq"] == 1  # the last seq sent for the device
    feed(host, fmt.samples([sample(2, pm25=1)], historical=False))
    assert host.seq_breaks == 0 and host.data[-1][2]["seq"] == 3


def state(online: bool, ts: int) -> bytes:
    return json.dumps({"online": online, "timestamp": ts}).encode()


def test_primary_host_gates_births_and_its_offline_state_ends_the_session(
    decoder: Decoder,
) -> None:
    fmt = make(primary="scada-1")
    topic = "spBv1.0/STATE/scada-1"
    assert fmt.subscriptions() == [fmt.topic_ncmd, topic]
    assert fmt.session_start() == [] and not fmt.ready()
    with pytest.raises(Refused, match="malformed"):  # Sparkplug 2.x STATE: not 3.0, refused
        fmt.on_message(topic, b"ONLINE")
    assert fmt.on_message(topic, state(False, 100)) == [] and not fmt.ready()
    births = fmt.on_message(topic, state(True, 200))
    assert [m.topic.split("/")[2] for m in births] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert fmt.ready()
    assert fmt.on_message(topic, state(True, 200)) == []  # the same STATE again: no rebirth
    assert fmt.on_message(topic, state(False, 150)) == [] and fmt.ready()  # older: ignored
    with pytest.raises(Reconnect) as info:
        fmt.on_message(topic, state(False, 300))
    (ndeath,) = info.value.messages
    assert (ndeath.topic, ndeath.qos) == (f"spBv1.0/{GROUP}/NDEATH/{NODE}", 1)
    assert decoder.decode(ndeath.payload)["metrics"][0]["raw"] == 7
    assert not fmt.ready()
    # The next connection: next bdSeq; its retained STATE counts whatever the last session saw
    # (SPEC v0.3: "the same MQTT session"), so a host whose clock went back is not ignored.
    fmt.begin(8)
    assert fmt.session_start() == [] and fmt.waiting_for() == "primary host scada-1"
    births = fmt.on_message(topic, state(True, 250))
    assert decoder.decode(births[0].payload)["metrics"][0]["raw"] == 8
    assert fmt.waiting_for() is None


def test_goodbye_is_ndeath_and_catalog_change_rebirths(decoder: Decoder) -> None:
    fmt = make()
    assert fmt.catalog_changed(catalog(alarms=())) == []  # not born: the births will say it
    host = born(decoder, fmt)
    births = fmt.catalog_changed(catalog(alarms=("aq-1/temp>30",)))
    feed(host, births)
    assert host.births == 2 and (None, "alarm/aq-1/temp/above") in host.values
    (bye,) = fmt.goodbye()
    assert bye.topic.endswith(f"/NDEATH/{NODE}") and bye.qos == 1
    assert not fmt.ready()


def test_a_state_from_the_future_is_refused_only_with_a_synchronised_clock() -> None:
    now = 1_764_000_000_000
    ten_years = 10 * 365 * 86_400_000
    synced = [True]
    fmt = make(primary="scada-1", clock=[now], clock_synced=lambda: synced[0])
    topic = "spBv1.0/STATE/scada-1"
    with pytest.raises(Refused, match="from_the_future"):
        fmt.on_message(topic, state(True, now + ten_years))
    assert not fmt.ready()  # not online, and it did not become "the last timestamp seen"
    assert fmt.on_message(topic, state(True, now + STATE_AHEAD_MS))  # within 60 s: births
    fmt.begin(8)
    synced[0] = False  # an unsynchronised clock cannot judge: the STATE counts
    assert fmt.on_message(topic, state(True, now + ten_years))


def test_a_rebirth_flood_is_paced_to_one_per_window(decoder: Decoder) -> None:
    clock = [100.0]
    fmt = make(monotonic=lambda: clock[0], rebirths=RebirthPacer(window_s=5.0))
    host = born(decoder, fmt)
    rebirth = decoder.encode_rebirth()
    first = fmt.on_message(fmt.topic_ncmd, rebirth)
    assert [m.topic.split("/")[2] for m in first] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    feed(host, first)
    for _ in range(20_000):  # the flood: nothing now, one pending for the window's end
        assert fmt.on_message(fmt.topic_ncmd, rebirth) == []
    assert fmt.due() == 105.0 and fmt.tick(104.9) == []
    clock[0] = 105.0
    pending = fmt.tick(105.0)
    assert [m.topic.split("/")[2] for m in pending] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    feed(host, pending)
    assert fmt.tick(110.0) == [] and fmt.due() is None  # a quiet window closes the burst
    assert host.births == 3 and host.seq_breaks == 0
    clock[0] = 111.0  # the next request is answered at once again
    assert fmt.on_message(fmt.topic_ncmd, rebirth)


def test_the_pacer_alone() -> None:
    pacer = RebirthPacer(window_s=2.0)
    assert pacer.due() is None and pacer.tick(0.0) == (False, None)
    assert pacer.request(10.0) and not pacer.request(10.5) and not pacer.request(11.0)
    assert pacer.tick(11.9) == (False, None)
    assert pacer.tick(12.0) == (True, None)  # the pending one, opening the next window
    rebirth, burst = pacer.tick(14.0)
    assert not rebirth and burst is not None and (burst.requests, burst.rebirths) == (3, 2)
    assert pacer.request(20.0)  # a new burst
    assert pacer.request(22.5)  # its window ended quietly, even with no tick: answered at once


def test_a_device_down_gets_ddeath_and_dbirth_when_it_answers_again(decoder: Decoder) -> None:
    states = {"aq-1": "ok", "noise-1": "ok"}
    fmt = make(device_states=lambda: states)
    host = born(decoder, fmt)
    assert fmt.due() is not None  # while born, the states are looked at once a second
    assert fmt.tick(100.0) == []
    states["aq-1"] = "failing"  # one lost answer is no death
    assert fmt.tick(101.0) == []
    states["aq-1"] = "down"
    (death,) = fmt.tick(102.0)
    assert feed(host, [death]) == []
    assert death.topic == f"spBv1.0/{GROUP}/DDEATH/{NODE}/aq-1"
    assert host.device_deaths == ["aq-1"]
    assert fmt.tick(103.0) == []  # once
    states["aq-1"] = "ok"
    (birth,) = fmt.tick(104.0)
    assert feed(host, [birth]) == []
    assert birth.topic == f"spBv1.0/{GROUP}/DBIRTH/{NODE}/aq-1"
    assert host.values["aq-1", "pm25"] == CURRENT["aq-1"]["pm25"]
    feed(host, fmt.samples([sample(5, pm25=9.0)], historical=False))
    assert host.seq_breaks == 0  # DDEATH and DBIRTH take their places in the node's seq
