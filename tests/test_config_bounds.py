"""Values that pass a type but can never work are refused by `check` and at start, one line
each: a topic prefix no broker takes, a scale that flattens or overflows every reading, a
status token too short to keep anyone out (issue 27)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.sources.registry import installed

MODBUS = {
    "name": "rs485-1",
    "kind": "modbus-rtu",
    "port": "/dev/ttyUSB0",
    "devices": [
        {
            "name": "aq-1",
            "unit": 1,
            "points": [{"name": "pm25", "table": "input", "address": 0, "type": "uint16"}],
        }
    ],
}
SERIAL = {
    "name": "noise-1",
    "kind": "serial",
    "port": "/dev/ttyAMA0",
    "parse": {"format": "kv"},
    "points": [{"name": "laeq"}],
}
BASE: dict[str, Any] = {
    "gateway": {"id": "lamppost-0421"},
    "uplink": {"servers": ["mqtt://127.0.0.1:1883"]},
    "sources": [MODBUS, SERIAL],
}


def config(tmp_path: Path, **top: Any) -> Path:
    """BASE with ``top``'s sections merged in, written to tmp_path/gateway.yaml."""
    data = copy.deepcopy(BASE)
    for key, value in top.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, installed())
    return caught.value.problems


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREET_GATEWAY_CONFIG": "/nonexistent/gateway.yaml"}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


# ---------------------------------------------------------------------------------------------
# uplink.topic_prefix: every topic is P/G/..., and the uplink never connects with a P no broker
# takes


LONG = "city/" + "x" * 70_000
QUOTED_LONG = "'city/" + "x" * 32 + "…" + "x" * 38 + "'"  # quoted, cut to 80 characters


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (LONG, f"{QUOTED_LONG} is 70005 bytes long; at most 128"),
        ("ü" * 65, f"{'ü' * 65!r} is 130 bytes long; at most 128"),  # bytes, not characters
        ("$SYS/city", "'$SYS/city': topics that start with $ are the broker's own ($SYS)"),
        ("$share", "'$share': topics that start with $ are the broker's own ($SYS)"),
        ("city//sensors", "'city//sensors': an empty level (//)"),
        # the refusals from before, word for word
        ("city/#", "'city/#': no wildcards (+ #) and no leading or trailing /"),
        ("city/+/x", "'city/+/x': no wildcards (+ #) and no leading or trailing /"),
        ("/city", "'/city': no wildcards (+ #) and no leading or trailing /"),
        ("city/", "'city/': no wildcards (+ #) and no leading or trailing /"),
        ("", "'': no wildcards (+ #) and no leading or trailing /"),
    ],
    ids=["70k", "multibyte", "$SYS", "$share", "empty level", "#", "+", "leading", "trailing", ""],
)
def test_a_topic_prefix_no_broker_takes_is_refused(
    tmp_path: Path, prefix: str, message: str
) -> None:
    path = config(tmp_path, uplink={"topic_prefix": prefix})
    assert problems(path) == [f"{path}: uplink.topic_prefix: {message}"]


@pytest.mark.parametrize("prefix", ["street-gateway", "city/sensors", "a" * 128, "ü" * 64, "a$b"])
def test_a_topic_prefix_up_to_128_bytes_is_fine(tmp_path: Path, prefix: str) -> None:
    loaded = load_config(config(tmp_path, uplink={"topic_prefix": prefix}), installed())
    assert loaded.config.uplink.topic_prefix == prefix


def test_check_refuses_a_70000_character_prefix_in_one_short_line(tmp_path: Path) -> None:
    path = config(tmp_path, uplink={"topic_prefix": LONG})
    result = cli("check", "-c", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}: uplink.topic_prefix: {QUOTED_LONG} is 70005 bytes long; at most 128"
    ]


# ---------------------------------------------------------------------------------------------
# scale and offset: bounded, so that raw x scale + offset stays finite for every integer and
# float32 raw value


def with_point(tmp_path: Path, **keys: Any) -> Path:
    modbus = copy.deepcopy(MODBUS)
    modbus["devices"][0]["points"][0].update(keys)
    serial = copy.deepcopy(SERIAL)
    serial["points"][0].update(keys)
    return config(tmp_path, sources=[modbus, serial])


SCALE = "a scale is between 1e-9 and 1e9, or between -1e9 and -1e-9"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"scale": 1e308}, f"scale: 1e+308: {SCALE}"),
        ({"scale": -2e9}, f"scale: -2000000000.0: {SCALE}"),
        ({"scale": 0}, f"scale: 0.0: {SCALE}"),
        ({"scale": 1e-12}, f"scale: 1e-12: {SCALE}"),
        ({"offset": 1e308}, "offset: 1e+308: an offset is from -1e9 to 1e9"),
        ({"offset": -1.5e9}, "offset: -1500000000.0: an offset is from -1e9 to 1e9"),
    ],
    ids=["1e308", "-2e9", "0", "1e-12", "offset 1e308", "offset -1.5e9"],
)
def test_a_scale_or_offset_out_of_bounds_is_refused_on_every_kind(
    tmp_path: Path, keys: dict[str, float], message: str
) -> None:
    path = with_point(tmp_path, **keys)
    assert problems(path) == [
        f"{path}: sources[0].devices[0].points[0].{message}",
        f"{path}: sources[1].points[0].{message}",
    ]


@pytest.mark.parametrize(
    "keys",
    [{"scale": 1e9}, {"scale": -1e9}, {"scale": 1e-9}, {"scale": -0.001}, {"offset": -1e9}],
    ids=["1e9", "-1e9", "1e-9", "-0.001", "offset -1e9"],
)
def test_a_scale_or_offset_at_the_bounds_is_fine(tmp_path: Path, keys: dict[str, float]) -> None:
    loaded = load_config(with_point(tmp_path, **keys), installed())
    (key, value), *_ = keys.items()
    modbus, serial = loaded.config.sources
    assert getattr(modbus.devices[0].points[0], key) == value  # type: ignore[attr-defined]
    assert getattr(serial.points[0], key) == value  # type: ignore[attr-defined]


def test_check_refuses_scale_1e308(tmp_path: Path) -> None:
    path = with_point(tmp_path, scale=1e308)
    result = cli("check", "-c", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}: sources[0].devices[0].points[0].scale: 1e+308: {SCALE}",
        f"{path}: sources[1].points[0].scale: 1e+308: {SCALE}",
    ]


# ---------------------------------------------------------------------------------------------
# status.token_file: an empty token would turn authentication off, a short one is guessed


def token_config(tmp_path: Path, token: str) -> tuple[Path, Path]:
    token_file = tmp_path / "status-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    status = {"listen": "0.0.0.0:8470", "token_file": "status-token"}
    return config(tmp_path, status=status), token_file


ADVICE = "a token has at least 16 bytes (make one with: openssl rand -hex 32)"


@pytest.mark.parametrize(
    ("token", "held"),
    [
        ("", "no token, only whitespace"),
        (" \n\t\n", "no token, only whitespace"),
        ("s3cret", "a token of 6 bytes"),
        ("  0123456789abcde \n", "a token of 15 bytes"),  # stripped first
    ],
    ids=["empty", "whitespace", "6 bytes", "15 bytes stripped"],
)
def test_a_short_status_token_is_refused(tmp_path: Path, token: str, held: str) -> None:
    path, token_file = token_config(tmp_path, token)
    assert problems(path) == [f"{path}: status.token_file: {token_file} holds {held}; {ADVICE}"]


@pytest.mark.parametrize("token", ["0123456789abcdef", "é" * 8, "  0123456789abcdef\n"])
def test_a_token_of_16_bytes_is_fine(tmp_path: Path, token: str) -> None:
    loaded = load_config(token_config(tmp_path, token)[0], installed())
    assert loaded.status_token == token.strip()


@pytest.mark.parametrize("command", ["check", "run"])
def test_check_and_run_refuse_an_empty_token_on_a_public_listener(
    tmp_path: Path, command: str
) -> None:
    path, token_file = token_config(tmp_path, "\n")
    result = cli(command, "-c", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}: status.token_file: {token_file} holds no token, only whitespace; {ADVICE}"
    ]
