"""The config loader: every file in configs/ loads, and every kind of mistake gets one clear line
that names the file and the key path."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config, parse_duration, parse_size, reader
from gateway.errors import ConfigError
from gateway.sources.modbus.config import ModbusRtuSource
from gateway.sources.registry import installed
from gateway.sources.serial.config import SerialSource

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

BASE: dict[str, Any] = {
    "gateway": {"id": "lamppost-0421"},
    "uplink": {"servers": ["mqtt://127.0.0.1:1883"]},
    "sources": [
        {
            "name": "rs485-1",
            "kind": "modbus-rtu",
            "port": "/dev/ttyUSB0",
            "devices": [
                {
                    "name": "aq-1",
                    "unit": 1,
                    "interval": "10s",
                    "points": [
                        {"name": "pm25", "table": "input", "address": 0, "type": "uint16"},
                        {"name": "temp", "table": "holding", "address": 10, "type": "float32"},
                        {"name": "door", "table": "discrete", "address": 0, "type": "bool"},
                    ],
                }
            ],
        },
        {
            "name": "noise-1",
            "kind": "serial",
            "port": "/dev/ttyAMA0",
            "parse": {"regex": "LAeq=(?P<laeq>[0-9.]+) LAmax=(?P<lamax>[0-9.]+)"},
            "points": [{"name": "laeq"}, {"name": "lamax"}],
        },
    ],
    "alarms": [{"point": "aq-1/pm25", "above": 50, "clear_below": 40}],
}


def write(tmp_path: Path, data: Any, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def problems_for(tmp_path: Path, data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data), installed())
    return info.value.problems


def mutated(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    change(data)
    return data


def point(data: dict[str, Any], index: int) -> dict[str, Any]:
    points: list[dict[str, Any]] = data["sources"][0]["devices"][0]["points"]
    return points[index]


def add_point(data: dict[str, Any], **fields: Any) -> None:
    data["sources"][0]["devices"][0]["points"].append(fields)


SECRET = "s3cret-0123456789"  # a status token needs 16 bytes


def secret(tmp_path: Path, mode: int) -> str:
    path = tmp_path / "secret"
    path.write_text(f"{SECRET}\n")
    path.chmod(mode)
    return str(path)


# (id, change to BASE, the key path the message must name, a fragment of the message)
BAD: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("type typo", lambda d: point(d, 0).update(type="flaot32"),
     "sources[0].devices[0].points[0].type", "'flaot32' is not one of bool, int16"),
    ("missing gateway id", lambda d: d["gateway"].pop("id"), "gateway.id", "required"),
    ("gateway id pattern", lambda d: d["gateway"].update(id="Lamp Post"), "gateway.id", "match"),
    ("unknown top-level key", lambda d: d.update(uplinks={}), "uplinks", "unknown key"),
    ("unknown point key", lambda d: point(d, 0).update(adress=3),
     "sources[0].devices[0].points[0].adress", "unknown key"),
    ("no servers", lambda d: d["uplink"].update(servers=[]), "uplink.servers",
     "needs at least 1 item"),
    ("bad scheme", lambda d: d["uplink"].update(servers=["http://x:1"]),
     "uplink.servers[0]", "mqtt:// or mqtts://"),
    ("bad server port", lambda d: d["uplink"].update(servers=["mqtt://x:99999"]),
     "uplink.servers[0]", "port"),
    ("qos 2", lambda d: d["uplink"].update(qos=2), "uplink.qos", "not one of 0, 1"),
    ("bare number duration", lambda d: d["sources"][0]["devices"][0].update(interval=10),
     "sources[0].devices[0].interval", "with a unit"),
    ("bad duration unit", lambda d: d["uplink"].update(keepalive="10 parsecs"),
     "uplink.keepalive", "not a duration"),
    ("bad size", lambda d: d.update(buffer={"max_size": "lots"}), "buffer.max_size", "not a size"),
    ("buffer too small", lambda d: d.update(buffer={"max_size": "96KiB"}), "buffer.max_size",
     "at least 256KiB"),
    ("bad sync", lambda d: d.update(buffer={"sync": "sometimes"}), "buffer.sync", "full, normal"),
    ("unknown source kind", lambda d: d["sources"][0].update(kind="canbus"),
     "sources[0]", "kind 'canbus' is not one of"),
    ("source without kind", lambda d: d["sources"][0].pop("kind"), "sources[0]", "'kind'"),
    ("duplicate source name", lambda d: d["sources"][1].update(name="rs485-1"),
     "sources[1].name", "already the name of sources[0]"),
    ("duplicate device name across sources", lambda d: d["sources"][1].update(name="aq-1"),
     "sources[1].name", "device name 'aq-1' is already used"),
    ("duplicate point name", lambda d: add_point(d, name="pm25", table="input", address=5,
     type="uint16"), "sources[0].devices[0].points[3].name", "used twice"),
    ("unit id too big", lambda d: d["sources"][0]["devices"][0].update(unit=248),
     "sources[0].devices[0].unit", "248 is more than the maximum, 247"),
    ("address too big", lambda d: point(d, 0).update(address=70000),
     "sources[0].devices[0].points[0].address", "70000 is more than the maximum, 65535"),
    ("address + width past the end", lambda d: point(d, 1).update(address=65535),
     "sources[0].devices[0].points[1].address", "past 65535"),
    ("overlapping registers", lambda d: add_point(d, name="t2", table="holding", address=11,
     type="uint16"), "sources[0].devices[0].points[3].address", "overlaps 'temp'"),
    ("same bit twice", lambda d: (add_point(d, name="b1", table="holding", address=20,
     type="bool", bit=3), add_point(d, name="b2", table="holding", address=20, type="bool",
     bit=3)), "sources[0].devices[0].points[4].address", "overlaps 'b1'"),
    ("bit point inside a float", lambda d: add_point(d, name="b", table="holding", address=10,
     type="bool", bit=1), "sources[0].devices[0].points[3].address", "overlaps 'temp'"),
    ("bit on a non-bool", lambda d: point(d, 0).update(bit=2),
     "sources[0].devices[0].points[0].bit", "only for a bool"),
    ("bit on a coil", lambda d: point(d, 2).update(bit=2),
     "sources[0].devices[0].points[2].bit", "only for a bool"),
    ("bit out of range", lambda d: add_point(d, name="b", table="holding", address=30,
     type="bool", bit=16), "sources[0].devices[0].points[3].bit",
     "16 is more than the maximum, 15"),
    ("float on a discrete table", lambda d: point(d, 2).update(type="float32"),
     "sources[0].devices[0].points[2].type", "type must be bool"),
    ("bad byte order", lambda d: point(d, 1).update(byte_order="ABDC"),
     "sources[0].devices[0].points[1].byte_order", "not one of ABCD"),
    ("string without length", lambda d: add_point(d, name="sn", table="holding", address=30,
     type="string"), "sources[0].devices[0].points[3].length", "needs length"),
    ("length on a number", lambda d: point(d, 1).update(length=2),
     "sources[0].devices[0].points[1].length", "only with type: string"),
    ("string too long", lambda d: add_point(d, name="sn", table="holding", address=30,
     type="string", length=126), "sources[0].devices[0].points[3].length",
     "126 is more than the maximum, 125"),
    ("string with a word order", lambda d: add_point(d, name="sn", table="holding",
     address=30, type="string", length=4, byte_order="CDAB"),
     "sources[0].devices[0].points[3].byte_order", "AB (high byte first, the default) or BA"),
    ("BA on a number", lambda d: point(d, 1).update(byte_order="BA"),
     "sources[0].devices[0].points[1].byte_order", "BA is for a string"),
    ("scale on a string", lambda d: add_point(d, name="sn", table="holding", address=30,
     type="string", length=4, scale=0.1), "sources[0].devices[0].points[3].scale",
     "no scale or offset"),
    ("string over a float", lambda d: add_point(d, name="sn", table="holding", address=8,
     type="string", length=3), "sources[0].devices[0].points[3].address", "overlaps"),
    ("string on a coil", lambda d: add_point(d, name="sn", table="coil", address=8,
     type="string", length=3), "sources[0].devices[0].points[3].type", "type must be bool"),
    ("infinite scale", lambda d: point(d, 0).update(scale=float("inf")),
     "sources[0].devices[0].points[0].scale", "finite"),
    ("max_registers over 125", lambda d: d["sources"][0].update(max_registers=126),
     "sources[0].max_registers", "126 is more than the maximum, 125"),
    ("max_bits zero", lambda d: d["sources"][0]["devices"][0].update(max_bits=0),
     "sources[0].devices[0].max_bits", "0 is less than the minimum, 1"),
    ("negative max_gap", lambda d: d["sources"][0]["devices"][0].update(max_gap=-1),
     "sources[0].devices[0].max_gap", "less than the minimum, 0"),
    ("pause too long", lambda d: d["sources"][0]["devices"][0].update(pause="1m"),
     "sources[0].devices[0].pause", "at most 10s"),
    ("pause without unit", lambda d: d["sources"][0].update(pause=20),
     "sources[0].pause", "with a unit"),
    ("float wider than max_registers", lambda d: d["sources"][0].update(max_registers=1),
     "sources[0].devices[0].points[1].type", "more than max_registers (1) allows"),
    ("string longer than the device's max_registers", lambda d: (
        d["sources"][0]["devices"][0].update(max_registers=8),
        add_point(d, name="sn", table="holding", address=30, type="string", length=10)),
     "sources[0].devices[0].points[3].length", "needs 10 registers in one request"),
    ("one_request_per_point not a bool", lambda d: d["sources"][0]["devices"][0].update(
        one_request_per_point="often"), "sources[0].devices[0].one_request_per_point", "bool"),
    ("bad table", lambda d: point(d, 0).update(table="holdings"),
     "sources[0].devices[0].points[0].table", "not one of coil"),
    ("no points", lambda d: d["sources"][0]["devices"][0].update(points=[]),
     "sources[0].devices[0].points", "needs at least 1 item"),
    ("bad parity", lambda d: d["sources"][0].update(parity="X"), "sources[0].parity", "N, E, O"),
    ("serial with two parsers", lambda d: d["sources"][1]["parse"].update(format="kv"),
     "sources[1].parse", "exactly one of regex or format"),
    ("serial with no parser", lambda d: d["sources"][1].update(parse={}),
     "sources[1].parse", "exactly one of regex or format"),
    ("regex missing a point", lambda d: d["sources"][1]["parse"].update(regex="LAeq=(?P<laeq>.*)"),
     "sources[1].parse.regex", "no named group for point(s) lamax"),
    ("regex does not compile", lambda d: d["sources"][1]["parse"].update(regex="(?P<laeq>[0-9"),
     "sources[1].parse.regex", "not a valid regular expression"),
    ("csv without fields", lambda d: d["sources"][1].update(parse={"format": "csv"}),
     "sources[1].parse.fields", "needs fields"),
    ("csv fields missing a point", lambda d: d["sources"][1].update(
        parse={"format": "csv", "fields": ["laeq", "other"]}),
     "sources[1].parse.fields", "no column for point(s) lamax"),
    ("fields with json", lambda d: d["sources"][1].update(
        parse={"format": "json", "fields": ["laeq"]}), "sources[1].parse.fields", "only with"),
    ("unknown parse format", lambda d: d["sources"][1].update(parse={"format": "xml"}),
     "sources[1].parse.format", "not one of kv, csv, json"),
    ("alarm on unknown device", lambda d: d["alarms"][0].update(point="aq-2/pm25"),
     "alarms[0].point", "no device named 'aq-2' (did you mean 'aq-1'?)"),
    ("alarm on unknown point", lambda d: d["alarms"][0].update(point="aq-1/pm10"),
     "alarms[0].point", "has no point 'pm10'"),
    ("alarm with above and below", lambda d: d["alarms"][0].update(below=3),
     "alarms[0]", "exactly one of above or below"),
    ("alarm with neither", lambda d: d["alarms"].append({"point": "aq-1/pm25"}),
     "alarms[1]", "exactly one of above or below"),
    ("clear_above with above", lambda d: d["alarms"][0].update(clear_above=60),
     "alarms[0].clear_above", "goes with below"),
    ("clear_below over above", lambda d: d["alarms"][0].update(clear_below=60),
     "alarms[0].clear_below", "must not exceed above"),
    ("bad priority", lambda d: d["alarms"][0].update(priority="urgent"),
     "alarms[0].priority", "not one of low, normal, high, critical"),
    ("status on a public address without token", lambda d: d.update(
        status={"listen": "0.0.0.0:8470"}), "status.listen", "token_file is required"),
    ("status listen without port", lambda d: d.update(status={"listen": "127.0.0.1"}),
     "status.listen", "HOST:PORT"),
    ("missing password file", lambda d: d["uplink"].update(username="u",
     password_file="/nonexistent/pw"), "uplink.password_file", "file not found"),
    ("password file without username", lambda d: d["uplink"].update(
        password_file=str(CONFIGS / "city-ca.pem")), "uplink.username", "username is needed"),
    ("topic prefix with wildcard", lambda d: d["uplink"].update(topic_prefix="city/#"),
     "uplink.topic_prefix", "no wildcards"),
    ("missing ca file", lambda d: d["uplink"].update(tls={"ca_file": "nope.pem"}),
     "uplink.tls.ca_file", "file not found"),
    ("batch too small", lambda d: d["uplink"].update(batch={"max_samples": 0}),
     "uplink.batch.max_samples", "0 is less than the minimum, 1"),
    ("batch too large", lambda d: d["uplink"].update(batch={"max_samples": 10_001}),
     "uplink.batch.max_samples", "10000"),
    # v0.1's name of the key: refused by name, not silently ignored
    ("batch in readings", lambda d: d["uplink"].update(batch={"max_readings": 50}),
     "uplink.batch.max_readings", "unknown key"),
    ("sources missing", lambda d: d.pop("sources"), "sources", "required"),
    ("labels not strings", lambda d: d["gateway"].update(labels={"site": ["a"]}),
     "gateway.labels.site", "valid string"),
    # Floors and bounds (issue 19): a zero interval busy-polled, then crashed `check`.
    ("interval 0ms", lambda d: d["sources"][0]["devices"][0].update(interval="0ms"),
     "sources[0].devices[0].interval", "0ms is too short; at least 10ms"),
    ("serial interval 5ms", lambda d: d["sources"][1].update(interval="5ms"),
     "sources[1].interval", "5ms is too short; at least 10ms"),
    ("timeout 0s", lambda d: d["sources"][0].update(timeout="0s"),
     "sources[0].timeout", "0ms is too short; at least 10ms"),
    ("backoff_max 1ms", lambda d: d["sources"][0].update(backoff_max="1ms"),
     "sources[0].backoff_max", "1ms is too short; at least 100ms"),
    ("keepalive past MQTT's 16 bits", lambda d: d["uplink"].update(keepalive="70000s"),
     "uplink.keepalive", "70000s is too long; at most 65535s"),
    ("reconnect_max 0s", lambda d: d["uplink"].update(reconnect_max="0s"),
     "uplink.reconnect_max", "0ms is too short; at least 100ms"),
    ("max_wait over a minute", lambda d: d["uplink"].update(batch={"max_wait": "90s"}),
     "uplink.batch.max_wait", "90s is too long; at most 60s"),
    ("max_age 30s", lambda d: d.update(buffer={"max_age": "30s"}),
     "buffer.max_age", "30s is too short; at least 60s"),
    ("duration of 401 digits", lambda d: d["uplink"].update(keepalive="1" + "0" * 400 + "s"),
     "uplink.keepalive", "0000s' is too long; at most 3650d"),
    ("size of 310 digits", lambda d: d.update(buffer={"max_size": "1" + "0" * 309 + "B"}),
     "buffer.max_size", "0000B' is too large; at most 1024GiB"),
    ("scale inf", lambda d: point(d, 0).update(scale=float("inf")),
     "sources[0].devices[0].points[0].scale", "inf is not a finite number"),
    ("serial offset nan", lambda d: d["sources"][1]["points"][0].update(offset=float("nan")),
     "sources[1].points[0].offset", "nan is not a finite number"),
    ("compression lz4", lambda d: d["uplink"].update(compression="lz4"),
     "uplink.compression", "'lz4' is not one of none, zstd"),
    ("zstd with sparkplug-b",
     lambda d: d["uplink"].update(compression="zstd", format="sparkplug-b",
                                  sparkplug={"group_id": "city"}),
     "uplink.compression", "'zstd' is for uplink.format json"),
    ("NUL in a file name", lambda d: d["uplink"].update(tls={"ca_file": "ca\0.pem"}),
     "uplink.tls.ca_file", "'ca\\x00.pem': a file name cannot hold a NUL character"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "key_path", "fragment"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])  # fmt: skip
def test_bad_config_names_key_path(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], key_path: str, fragment: str
) -> None:
    problems = problems_for(tmp_path, mutated(change))
    expected_prefix = f"{tmp_path / 'gateway.yaml'}: {key_path}: "
    matching = [p for p in problems if p.startswith(expected_prefix)]
    assert matching, f"no problem names {key_path!r}: {problems}"
    assert any(fragment in p for p in matching), problems
    assert all("\n" not in p for p in problems)


def test_there_are_at_least_thirty_distinct_bad_configs() -> None:
    assert len({b[0] for b in BAD}) >= 30


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    def two_mistakes(d: dict[str, Any]) -> None:
        point(d, 0).update(type="flaot32")
        d["uplink"].update(qos=5)

    problems = problems_for(tmp_path, mutated(two_mistakes))
    assert len(problems) == 2


def test_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = secret(tmp_path, 0o644)
    data = mutated(lambda d: d["uplink"].update(username="u", password_file=path))
    problems = problems_for(tmp_path, data)
    assert any("uplink.password_file" in p and "chmod 600" in p for p in problems)


def test_tls_key_readable_by_group_is_refused(tmp_path: Path) -> None:
    key = secret(tmp_path, 0o640)
    data = mutated(lambda d: d["uplink"].update(tls={"cert_file": key, "key_file": key}))
    problems = problems_for(tmp_path, data)
    assert any(p.endswith("chmod 600 it") and "uplink.tls.key_file" in p for p in problems)


def test_secret_is_read_stripped_and_token_allows_public_listen(tmp_path: Path) -> None:
    path = secret(tmp_path, 0o600)
    data = mutated(
        lambda d: (
            d["uplink"].update(username="u", password_file=path),
            d.update(status={"listen": "0.0.0.0:8470", "token_file": path}),
        )
    )
    loaded = load_config(write(tmp_path, data), installed())
    assert loaded.mqtt_password == SECRET
    assert loaded.status_token == SECRET
    assert SECRET not in repr(loaded)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, "gateway:\n  id: x\nuplink: [unclosed\n")
    assert len(problems) == 1
    assert "line 4" in problems[0] or "line 3" in problems[0]
    assert "YAML syntax error" in problems[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", installed())
    assert info.value.problems == [f"{tmp_path / 'nope.yaml'}: file not found"]


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "must be a mapping" in problems_for(tmp_path, "- just\n- a list\n")[0]


def test_defaults_and_resolved_paths(tmp_path: Path) -> None:
    loaded = load_config(
        write(tmp_path, BASE), installed(), environ={"STATE_DIRECTORY": "/srv/state:/x"}
    )
    config = loaded.config
    assert config.buffer.path == Path("/srv/state/buffer.db")
    assert config.buffer.max_size == 256 * 1024**2
    assert config.buffer.max_age == 30 * 86400
    assert config.uplink.qos == 1
    assert config.uplink.topic_prefix == "street-gateway"
    assert (config.uplink.batch.max_samples, config.uplink.batch.max_wait) == (100, 0.1)
    assert config.client_id == "lamppost-0421"
    assert config.status.listen == "127.0.0.1:8470"
    serial = config.sources[1]
    assert isinstance(serial, SerialSource)
    assert serial.poll_interval == 60.0  # stream mode: staleness window
    assert config.alarms[0].name == "aq-1/pm25>50"
    assert loaded.digest
    assert not loaded.warnings


def test_default_state_dir_without_systemd(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, BASE), installed(), environ={})
    assert loaded.config.buffer.path == Path("/var/lib/street-gateway/buffer.db")


def test_qos_zero_warns(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, mutated(lambda d: d["uplink"].update(qos=0))), installed())
    assert any("best-effort" in w for w in loaded.warnings)


def test_bit_points_of_distinct_bits_share_a_register(tmp_path: Path) -> None:
    def bits(d: dict[str, Any]) -> None:
        for bit in range(16):
            add_point(d, name=f"b{bit}", table="holding", address=20, type="bool", bit=bit)

    loaded = load_config(write(tmp_path, mutated(bits)), installed())
    source = loaded.config.sources[0]
    assert isinstance(source, ModbusRtuSource)
    assert len(source.devices[0].points) == 19


def test_include_appends_sources_and_alarms_and_names_the_included_file(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    extra = {
        "sources": [
            {
                "name": "meter",
                "kind": "modbus-tcp",
                "host": "127.0.0.1",
                "devices": [
                    {"name": "energy-1", "unit": 1, "points": [
                        {"name": "power", "table": "holding", "address": 0, "type": "float32"}]}
                ],
            }
        ],
        "alarms": [{"point": "energy-1/power", "above": 1000}],
    }  # fmt: skip
    write(tmp_path / "conf.d", extra, "meter.yaml")
    loaded = load_config(
        write(tmp_path, mutated(lambda d: d.update(include=["conf.d/*.yaml"]))), installed()
    )
    assert [s.name for s in loaded.config.sources] == ["rs485-1", "noise-1", "meter"]
    assert len(loaded.config.alarms) == 2

    extra["sources"][0]["devices"][0]["points"][0]["type"] = "float"
    write(tmp_path / "conf.d", extra, "meter.yaml")
    problems = problems_for(tmp_path, mutated(lambda d: d.update(include=["conf.d/*.yaml"])))
    assert problems == [
        f"{tmp_path / 'conf.d' / 'meter.yaml'}: sources[0].devices[0].points[0].type: "
        "'float' is not one of bool, int16, uint16, int32, uint32, float32, int64, uint64, "
        "float64, string"
    ]


def test_include_of_a_missing_file_and_of_forbidden_keys(tmp_path: Path) -> None:
    write(tmp_path, {"uplink": {"servers": []}}, "bad.yaml")
    problems = problems_for(
        tmp_path, mutated(lambda d: d.update(include=["missing.yaml", "bad.yaml"]))
    )
    assert any("include[0]: file not found" in p for p in problems)
    assert any(p.startswith(f"{tmp_path / 'bad.yaml'}: uplink:") for p in problems)


def test_empty_include_glob_is_fine(tmp_path: Path) -> None:
    load_config(
        write(tmp_path, mutated(lambda d: d.update(include=["conf.d/*.yaml"]))), installed()
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("10s", 10), ("5m", 300), ("1h", 3600), ("30d", 2592000)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [("64MiB", 64 * 1024**2), ("1GiB", 1024**3), ("500kB", 500_000), ("10B", 10)]
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    load_config(path, installed())


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREET_GATEWAY_CONFIG": "/nonexistent/gateway.yaml"}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_check_prints_a_summary_of_the_example() -> None:
    result = run_cli("check", "-c", str(CONFIGS / "example.yaml"))
    assert result.returncode == 0, result.stderr
    assert "8 devices, 26 points" in result.stdout
    assert "device energy-2 unit 2: 5 points (template din-meter)" in result.stdout
    assert "templates used: din-meter (energy-1, energy-2)" in result.stdout
    assert "device river-gauge address 0, M: 2 points every 60s" in result.stdout
    assert "device rain-1 address 1, C with CRC: 1 point every 300s" in result.stdout
    assert "source dust-1 (particulate sds011" in result.stdout
    assert "mqtts://broker-a.city.example:8883" in result.stdout


def test_check_reports_problems_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, mutated(lambda d: point(d, 0).update(type="flaot32")))
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"{path}: sources[0].devices[0].points[0].type: 'flaot32' is not one of bool, int16, "
        "uint16, int32, uint32, float32, int64, uint64, float64, "
        "string"
    ]
    assert "Traceback" not in result.stderr


def test_check_without_a_config_uses_the_environment_default() -> None:
    result = run_cli("check")
    assert result.returncode == 2
    assert result.stderr.strip() == "/nonexistent/gateway.yaml: file not found"


def test_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("run", "check", "status", "demo", "audit", "probe"):
        assert f"    {command} " in result.stdout


def test_probe_alone_lists_the_probes() -> None:
    result = run_cli("probe")
    assert result.returncode == 2
    assert "modbus" in result.stderr
    assert "serial" in result.stderr


# ---------------------------------------------------------------------------------------------
# Files that crashed `check` or flooded its answer (issue 19): the exact line each one gets.

BOMB = (
    "[&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol], "
    + ", ".join(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9))
    + "]"
)  # 9**9 values once expanded


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x: " + "[" * 491 + "]" * 491, "line 1, column 67: nested deeper than 64 levels"),
        (f"gateway: {{labels: {BOMB}}}\n",
         "line 1, column 285: expands to more than 100,000 values through its aliases"),
        ("x: &a [*a]\n", "line 1, column 8: alias *'a' is used inside its own anchor"),
        ("gateway: {id: gw}\nuplink: {}\ngateway: {id: gw2}\n",
         "gateway: given twice, on lines 1 and 3; only the last would count"),
        ("gateway: {id: a, id: b}\n",
         "gateway.id: given twice, on line 1; only the last would count"),
        ("x: 1" + "0" * 5000 + "\n", "line 1, column 4: cannot read '1000000000000000000000000000"
         "000000000…00000000000000000000000000000000000000': too many digits"),
        ("x: 2001-13-01\n", "line 1, column 4: cannot read '2001-13-01': month must be in 1..12"),
    ],
    ids=["deep", "alias bomb", "alias in its anchor", "duplicate section", "duplicate key",
         "5000 digits", "13th month"],
)  # fmt: skip
def test_hostile_yaml_gets_one_line_naming_where(tmp_path: Path, text: str, expected: str) -> None:
    assert problems_for(tmp_path, text) == [f"{tmp_path / 'gateway.yaml'}: {expected}"]


def test_half_a_surrogate_pair_is_refused_by_either_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libyaml refuses the escape itself; PyYAML's Python loader (without libyaml) builds half
    a character, which nothing can print: the loader's own check refuses it."""
    text = 'gateway: {id: "\\ud800"}\n'
    assert problems_for(tmp_path, text) == [
        f"{tmp_path / 'gateway.yaml'}: line 1, column 18: YAML syntax error: "
        "found invalid Unicode character escape code"
    ]

    class PythonLoader(reader._SafeValues, yaml.SafeLoader):
        pass

    monkeypatch.setattr(reader, "_Loader", PythonLoader)
    assert problems_for(tmp_path, text) == [
        f"{tmp_path / 'gateway.yaml'}: gateway.id: holds \\ud800, which is not a character"
    ]


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(b"gateway:\n  id: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, installed())
    assert info.value.problems == [
        f"{path}: line 2: not UTF-8 text (byte 0xff); save the file as UTF-8"
    ]


def test_include_of_a_directory_names_the_including_file_and_the_entry(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    problems = problems_for(
        tmp_path, mutated(lambda d: d.update(include=["missing.yaml", "conf.d"]))
    )
    main = tmp_path / "gateway.yaml"
    assert problems == [
        f"{main}: include[0]: file not found: {tmp_path / 'missing.yaml'}",
        f"{main}: include[1]: {tmp_path / 'conf.d'} is a directory, not a file; name files, "
        "or a glob like 'conf.d/*.yaml'",
    ]


def test_a_quoted_value_is_cut_to_about_80_characters(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, mutated(lambda d: d["gateway"].update(id="X" * 100_000)))
    (problem,) = problems
    assert problem.startswith(f"{tmp_path / 'gateway.yaml'}: gateway.id: 'XXXX")
    assert "…" in problem
    assert len(problem) < len(str(tmp_path)) + 200


def test_at_most_fifty_problems_then_a_count(tmp_path: Path) -> None:
    def many(d: dict[str, Any]) -> None:
        for i in range(80):
            add_point(d, name=f"p{i}", table="holding", address=100 + i, type="flaot32")

    problems = problems_for(tmp_path, mutated(many))
    assert len(problems) == 51
    assert problems[-1] == f"{tmp_path / 'gateway.yaml'}: and 30 more problems"


# templates


METER = [
    {"name": "voltage", "table": "input", "address": 0, "type": "float32", "unit": "V"},
    {"name": "current", "table": "input", "address": 6, "type": "float32", "unit": "A"},
]


def with_template(
    template: str = "sdm120", points: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    def change(d: dict[str, Any]) -> None:
        d["templates"] = {"sdm120": METER}
        device = {"name": "meter-1", "unit": 5, "template": template}
        if points is not None:
            device["points"] = points
        d["sources"][0]["devices"].append(device)

    return mutated(change)


def test_a_template_gives_its_points_first_then_the_devices_own(tmp_path: Path) -> None:
    own = [{"name": "door", "table": "coil", "address": 0, "type": "bool"}]
    loaded = load_config(write(tmp_path, with_template(points=own)), installed())
    source = loaded.config.sources[0]
    assert isinstance(source, ModbusRtuSource)
    meter = source.devices[1]
    assert meter.template == "sdm120"
    assert [p.name for p in meter.points] == ["voltage", "current", "door"]
    assert loaded.config.point_names()["meter-1"] == {"voltage", "current", "door"}
    assert loaded.warnings == []


def test_a_missing_template_gets_a_did_you_mean(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, with_template("sdm12O"))
    assert problems == [
        f"{tmp_path / 'gateway.yaml'}: sources[0].devices[1].template: no template named "
        "'sdm12O' (did you mean 'sdm120'?); templates: sdm120"
    ]


def test_overlaps_between_template_and_own_points_are_reported(tmp_path: Path) -> None:
    own = [
        {"name": "voltage", "table": "input", "address": 20, "type": "uint16"},
        {"name": "freq", "table": "input", "address": 7, "type": "uint16"},
    ]
    problems = problems_for(tmp_path, with_template(points=own))
    file = tmp_path / "gateway.yaml"
    assert problems == [
        f"{file}: sources[0].devices[1].points[0].name: point name 'voltage' is used twice "
        "(also in template 'sdm120')",
        f"{file}: sources[0].devices[1].points[1].address: 'freq' overlaps 'current' "
        "(template 'sdm120') at input address 7",
    ]


def test_a_problem_inside_a_template_is_reported_once_at_the_template(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["templates"] = {"bad": [*METER, {"name": "x", "table": "input", "address": 7,
                                           "type": "uint16"}]}  # fmt: skip
        for n in (1, 2):
            d["sources"][0]["devices"].append({"name": f"m{n}", "unit": n + 5, "template": "bad"})

    problems = problems_for(tmp_path, mutated(change))
    assert problems == [
        f"{tmp_path / 'gateway.yaml'}: templates.bad[2].address: 'x' overlaps 'current' "
        "(templates.bad[1]) at input address 7"
    ]


def test_a_template_point_is_validated_with_its_key_path(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["templates"] = {"sdm120": [{**METER[0], "type": "flaot32"}]}

    problems = problems_for(tmp_path, mutated(change))
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'gateway.yaml'}: templates.sdm120[0].type: ")


def test_a_device_without_points_or_template(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["sources"][0]["devices"].append({"name": "empty", "unit": 9})

    assert problems_for(tmp_path, mutated(change)) == [
        f"{tmp_path / 'gateway.yaml'}: sources[0].devices[1].points: needs at least 1 item: "
        "give points, a template, or both"
    ]


def test_an_unused_template_is_a_warning(tmp_path: Path) -> None:
    loaded = load_config(
        write(tmp_path, mutated(lambda d: d.update(templates={"t": METER}))), installed()
    )
    assert loaded.warnings == [f"{tmp_path / 'gateway.yaml'}: templates.t: no device uses it"]


def test_included_files_may_add_templates(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    write(tmp_path / "conf.d", {"templates": {"sdm120": METER}}, "meters.yaml")
    bad = {"templates": {"sdm120": [{**METER[0], "type": "float"}]}}
    data = with_template()
    data.pop("templates")
    loaded = load_config(write(tmp_path, {**data, "include": ["conf.d/*.yaml"]}), installed())
    source = loaded.config.sources[0]
    assert isinstance(source, ModbusRtuSource)
    assert [p.name for p in source.devices[1].points] == ["voltage", "current"]
    # defined twice: refused, naming both files
    write(tmp_path / "conf.d", bad, "more.yaml")
    problems = problems_for(tmp_path, {**data, "include": ["conf.d/*.yaml"]})
    assert problems == [
        f"{tmp_path / 'conf.d' / 'more.yaml'}: templates.sdm120: already defined in "
        f"{tmp_path / 'conf.d' / 'meters.yaml'}"
    ]
    # a mistake in an included template names the included file
    (tmp_path / "conf.d" / "more.yaml").unlink()
    write(tmp_path / "conf.d", bad, "meters.yaml")
    problems = problems_for(tmp_path, {**data, "include": ["conf.d/*.yaml"]})
    assert problems[0].startswith(f"{tmp_path / 'conf.d' / 'meters.yaml'}: templates.sdm120[0]")


def test_the_examples_commented_ups_is_valid_once_its_key_files_exist(tmp_path: Path) -> None:
    """The UPS block of example.yaml stays commented (its key files cannot ship); uncommented,
    with the two passphrase files in place, `check` takes it."""
    text = (CONFIGS / "example.yaml").read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  # - name: ups-1"))
    end = next(i for i in range(start, len(lines)) if "input_voltage" in lines[i])
    block = [line.replace("  # ", "  ", 1) for line in lines[start : end + 1]]
    for name in ("ups-1.auth", "ups-1.priv"):
        key = tmp_path / name
        key.write_text("a passphrase of the city\n")
        key.chmod(0o600)
    uncommented = "\n".join([*lines[:start], *block, *lines[end + 1 :]])
    uncommented = uncommented.replace("/etc/street-gateway/ups-", f"{tmp_path}/ups-")
    uncommented = uncommented.replace("city-ca.pem", str(CONFIGS / "city-ca.pem"))
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(uncommented)
    result = run_cli("check", "-c", str(config_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "source ups-1 (snmp" in result.stdout


def test_yaml_is_read_with_yaml_12_booleans_so_on_is_a_word() -> None:
    """`duty: {on: 30s}` and an action's `on: raised` need `on` as a key; YAML 1.1 (PyYAML's
    default) would read it as True. Editors read YAML 1.2, and so does the gateway."""
    from gateway.config.reader import parse_yaml  # noqa: PLC0415 - the reader itself

    assert parse_yaml(b"on: 1\noff: yes\nt: true\nf: False\n", "x.yaml") == {
        "on": 1,
        "off": "yes",
        "t": True,
        "f": False,
    }


def test_a_boolean_key_still_takes_yes(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "gateway: {id: g}\nuplink: {servers: [mqtt://127.0.0.1:1883]}\n"
        "sources:\n  - {name: plc, kind: modbus-tcp, host: 127.0.0.1, devices: [{name: d,"
        " unit: 1, interval: 1s, one_request_per_point: yes,"
        " points: [{name: p, table: holding, address: 0, type: uint16}]}]}\n"
    )
    loaded = load_config(path, installed(), environ={"STATE_DIRECTORY": str(tmp_path)})
    device = loaded.config.sources[0].devices[0]  # type: ignore[attr-defined]
    assert device.one_request_per_point is True
