"""The particulate source against simulated SDS011 and PMS5003 sensors on real pseudo-terminals
(a fresh one per test), its config checks, and `probe particulate`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import time
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.model import DeviceStats, Sample
from gateway.sources.particulate.config import ParticulateSource
from gateway.sources.particulate.probe import probe
from gateway.sources.particulate.sim import UNSETTLED, SimulatedDustSensor
from gateway.sources.particulate.source import DustSensorSource
from gateway.sources.registry import installed

FRAME_PERIOD = 0.05  # the sims talk 20 times a second (real sensors: about once a second)


def dust_config(port: Path | str, model: str = "sds011", **overrides: Any) -> ParticulateSource:
    raw: dict[str, Any] = {
        "name": "dust-1",
        "kind": "particulate",
        "model": model,
        "port": str(port),
        "interval": "300ms",
        "timeout": "500ms",
        "backoff_max": "200ms",
    }
    raw.update(overrides)
    return ParticulateSource.model_validate(raw)


@pytest.fixture
def make_sim(tmp_path: Path) -> Iterator[Callable[..., SimulatedDustSensor]]:
    """Start a simulated sensor behind a link in tmp_path; stopped after the test."""
    started: list[SimulatedDustSensor] = []

    def make(model: str = "sds011", name: str = "ttyDUST", **options: Any) -> SimulatedDustSensor:
        options.setdefault("period", FRAME_PERIOD)
        sim = SimulatedDustSensor(model, tmp_path / name, seed=len(started) + 1, **options)  # type: ignore[arg-type]
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@contextlib.asynccontextmanager
async def running(config: ParticulateSource) -> AsyncIterator[tuple[DeviceStats, list[Sample]]]:
    samples: list[Sample] = []
    source = DustSensorSource(config, samples.append)
    task = asyncio.create_task(source.run(), name="particulate-source")
    try:
        yield source.devices[0], samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(predicate: Callable[[], object], what: str, within: float = 8.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {within}s: {what}")
        await asyncio.sleep(0.02)


def genuine(samples: list[Sample], sim: SimulatedDustSensor) -> bool:
    """Every sample carries the values of a good frame the sensor sent."""
    sent = list(sim.sent)
    return all(dict(s.values) in sent for s in samples)


# ---------------------------------------------------------------------------------------------
# Continuous


@pytest.mark.parametrize(
    ("model", "points"), [("sds011", {"pm25", "pm10"}), ("pms5003", {"pm1", "pm25", "pm10"})]
)
async def test_a_running_sensor_gives_one_sample_per_interval_from_its_latest_frame(
    make_sim: Callable[..., SimulatedDustSensor], model: str, points: set[str]
) -> None:
    sim = make_sim(model, awake=False)  # left asleep by someone: the source wakes it
    async with running(dust_config(sim.path, model)) as (stats, samples):
        await until(lambda: len(samples) >= 4, "four samples")
    assert {s.device for s in samples} == {"dust-1"}
    assert all(set(s.values) == points for s in samples)
    assert genuine(samples, sim)
    # each interval (300 ms of 50 ms frames) gives one sample, not one per frame
    assert len(samples) < sim.good_frames_sent / 2
    assert stats.state == "ok" and stats.parse_errors == 0
    assert sim.commands[:2] == ["wake", "active"]


async def test_bad_checksums_and_cut_frames_are_counted_never_published(
    make_sim: Callable[..., SimulatedDustSensor],
) -> None:
    sim = make_sim("pms5003", bad_checksum_every=2, cut_every=3)
    async with running(dust_config(sim.path, "pms5003")) as (stats, samples):
        await until(lambda: len(samples) >= 5 and stats.parse_errors >= 5, "samples, bad frames")
    assert genuine(samples, sim)  # a corrupted frame's values never reach a sample
    assert stats.state == "ok"


async def test_ten_kilobytes_of_noise_are_skipped_and_logged_once(
    make_sim: Callable[..., SimulatedDustSensor], caplog: pytest.LogCaptureFixture
) -> None:
    sim = make_sim("sds011")
    caplog.set_level(logging.INFO, "gateway.sources.particulate")
    async with running(dust_config(sim.path)) as (stats, samples):
        await until(lambda: len(samples) >= 2, "samples before the noise")
        for _ in range(3):
            sim.send_noise(10_240)
            await asyncio.sleep(0.4)
        before = len(samples)
        await until(lambda: len(samples) >= before + 3, "samples after the noise")
        await until(lambda: "frames check again" in caplog.text, "the line logged clean again")
    assert genuine(samples, sim)
    assert stats.state == "ok"
    warnings = [r for r in caplog.records if "bad frames on the line" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_sensor_that_stops_talking_goes_down_and_the_other_is_unaffected(
    make_sim: Callable[..., SimulatedDustSensor],
) -> None:
    quiet = make_sim("sds011", name="ttyQUIET")
    chatty = make_sim("pms5003", name="ttyCHATTY")
    async with (
        running(dust_config(quiet.path, name="dust-quiet")) as (q_stats, q_samples),
        running(dust_config(chatty.path, "pms5003", name="dust-chatty")) as (c_stats, c_samples),
    ):
        await until(lambda: q_samples and c_samples, "both sensors sampled")
        quiet.silent = True
        await until(lambda: q_stats.state == "down", "the silent sensor down")
        assert q_stats.last_error == "no valid frame in 0.3s"
        count = len(c_samples)
        await until(lambda: len(c_samples) >= count + 3, "the other sensor still sampled")
        assert c_stats.state == "ok"
        quiet.silent = False
        await until(lambda: q_stats.state == "ok", "the sensor back")
    # while silent, each failed interval sent the wake-up again in case it had been put to sleep
    assert quiet.commands.count("wake") >= 3


async def test_an_unplugged_adapter_makes_the_device_down_until_it_is_back(
    make_sim: Callable[..., SimulatedDustSensor], tmp_path: Path
) -> None:
    sim = make_sim("sds011")
    async with running(dust_config(sim.path)) as (stats, samples):
        await until(lambda: samples, "a sample")
        sim.stop()  # the pty goes away, and its link with it
        await until(lambda: stats.state == "down", "down")
        assert "port lost" in (stats.last_error or "") or "cannot open" in (stats.last_error or "")
        count = len(samples)
        back = make_sim("sds011")  # a new pty behind the same link
        await until(lambda: len(samples) > count and stats.state == "ok", "samples again")
    assert genuine(samples[count:], back)


async def test_a_port_that_cannot_be_opened_is_down_and_retried(tmp_path: Path) -> None:
    missing = tmp_path / "ttyNONE"
    async with running(dust_config(missing)) as (stats, samples):
        await until(lambda: stats.state == "down", "down")
        assert "cannot open" in (stats.last_error or "")
        sim = SimulatedDustSensor("sds011", missing, period=FRAME_PERIOD)
        with sim:
            await until(lambda: samples, "a sample once the sensor is plugged in")
    assert stats.state == "ok"


# ---------------------------------------------------------------------------------------------
# Duty cycle


DUTY = {"on": "400ms", "every": "1500ms", "warmup": "400ms"}


async def test_duty_cycling_sleeps_between_cycles_and_drops_warm_up_readings(
    make_sim: Callable[..., SimulatedDustSensor],
) -> None:
    # the sensor reports nonsense (UNSETTLED) for 150 ms after waking, as a fan spinning up would
    sim = make_sim("sds011", settle=0.15)
    config = dust_config(sim.path, interval=None, duty=DUTY)
    async with running(config) as (stats, samples):
        await until(lambda: len(samples) >= 3, "three cycles", within=10)
    assert all(s.values["pm25"] != UNSETTLED for s in samples)  # warm-up readings are dropped
    assert genuine(samples, sim)
    # per cycle: wake, active mode, sleep; left asleep when stopped
    assert sim.commands[: 3 * 3] == ["wake", "active", "sleep"] * 3
    assert stats.state == "ok" and stats.interval_s == 1.5
    await until(lambda: sim.commands[-1] == "sleep" and not sim.awake, "left asleep")


async def test_readings_taken_during_the_warm_up_are_never_published(
    make_sim: Callable[..., SimulatedDustSensor],
) -> None:
    # a sensor that reports only during the first 200 ms after each wake-up, inside the warm-up
    sim = make_sim("sds011", talk_for=0.2)
    config = dust_config(sim.path, interval=None, duty=DUTY)
    async with running(config) as (stats, samples):
        await until(lambda: stats.reads_failed >= 2, "two cycles")
        assert sim.good_frames_sent > 0
    assert samples == []
    assert stats.last_error == "no valid frame in the 0.4s after warm-up"


async def test_a_sensor_that_misses_its_sleep_command_is_told_again(
    make_sim: Callable[..., SimulatedDustSensor], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gateway.sources.particulate")
    sim = make_sim("pms5003")
    sim.deaf_to_sleep = True
    config = dust_config(sim.path, "pms5003", interval=None, duty=DUTY)
    async with running(config) as (_, samples):
        await until(lambda: samples, "a cycle")
        # sent again while it should sleep: two sleep commands with no wake-up between them
        await until(lambda: "sleep,sleep" in ",".join(sim.commands), "sleep sent again")
        assert caplog.text.count("still measuring while it should sleep") == 1
        sim.deaf_to_sleep = False
        sleeps = sim.commands.count("sleep")
        await until(lambda: sim.commands.count("sleep") > sleeps, "the next sleep")
        await until(lambda: not sim.awake, "asleep")
        await until(lambda: "asleep as told" in caplog.text, "its recovery logged")


async def test_while_raised_keeps_a_duty_cycled_sensor_awake(
    make_sim: Callable[..., SimulatedDustSensor],
) -> None:
    sim = make_sim("sds011")
    samples: list[Sample] = []
    config = dust_config(sim.path, interval=None, duty={**DUTY, "every": "3s"})
    source = DustSensorSource(config, samples.append)
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: samples, "the first cycle")
        source.cores[0].override_interval(0.2, "alarm dust-1/pm25>50")
        await until(lambda: sim.awake, "woken for the alarm", within=5)
        count = len(samples)
        await until(lambda: len(samples) >= count + 5, "a sample every 200 ms")
        assert sim.awake
        source.cores[0].override_interval(None)
        await until(lambda: not sim.awake, "back to its cycle", within=5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ---------------------------------------------------------------------------------------------
# Config


def _load(tmp_path: Path, source: str) -> ConfigError:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "gateway: {id: lamppost-1}\n"
        "uplink: {servers: ['mqtt://127.0.0.1:1883']}\n"
        f"sources:\n  - {source}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, installed())
    return caught.value


def test_config_mistakes_name_their_key_path(tmp_path: Path) -> None:
    error = _load(
        tmp_path,
        "{name: dust-1, kind: particulate, model: sds011, port: /dev/ttyUSB0, interval: 10s,"
        " duty: {on: 30s, every: 50s, warmup: 30s}}",
    )
    text = str(error)
    assert "sources[0].interval: with duty, a sample is taken every duty.every (50s)" in text
    assert "sources[0].duty.every: 50s leaves no time asleep after warmup + on (60s)" in text
    error = _load(tmp_path, "{name: dust-1, kind: particulate, model: sds021, port: /dev/x}")
    assert "sources[0].model" in str(error) and "sds011" in str(error)


def test_a_valid_config_gives_fixed_points_and_the_cycle_as_interval(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "gateway: {id: lamppost-1}\n"
        "uplink: {servers: ['mqtt://127.0.0.1:1883']}\n"
        "sources:\n"
        "  - {name: dust-1, kind: particulate, model: pms5003, port: /dev/ttyUSB0,"
        " duty: {on: 30s, every: 5m}}\n"
        "  - {name: dust-2, kind: particulate, model: sds011, port: /dev/ttyUSB1}\n"
        "alarms:\n  - {point: dust-1/pm25, above: 50}\n"
    )
    config = load_config(path, installed()).config
    [pms] = config.sources[0].device_specs()
    [sds] = config.sources[1].device_specs()
    assert [(p.name, p.unit, p.type) for p in pms.points] == [
        ("pm1", "ug/m3", "number"), ("pm25", "ug/m3", "number"), ("pm10", "ug/m3", "number")
    ]  # fmt: skip
    assert pms.interval_s == 300 and sds.interval_s == 10
    assert [p.name for p in sds.points] == ["pm25", "pm10"]


def test_the_readmes_sample_config_is_valid(tmp_path: Path) -> None:
    readme = Path(__file__).parent.parent / "gateway" / "sources" / "particulate" / "README.md"
    [block] = re.findall(r"^```yaml\n(.*?)^```$", readme.read_text(), re.M | re.S)
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "gateway: {id: lamppost-1}\nuplink: {servers: ['mqtt://127.0.0.1:1883']}\n" + block
    )
    config = load_config(path, installed()).config
    specs = [spec for source in config.sources for spec in source.device_specs()]
    assert [(s.name, s.interval_s) for s in specs] == [
        ("dust-grand-place", 300), ("dust-school-gate", 60)
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# probe particulate


async def test_probe_prints_decoded_frames_and_exits_0(
    make_sim: Callable[..., SimulatedDustSensor],
) -> None:
    sim = make_sim("sds011", awake=False, bad_checksum_every=4)
    out = io.StringIO()
    code = await probe(sim.path, "sds011", seconds=1.0, out=out)
    text = out.getvalue()
    assert code == 0
    assert "reply to command 0x06" in text  # the SDS011 acknowledged the wake-up
    value = sim.sent[0]
    assert f"pm25={value['pm25']:g} pm10={value['pm10']:g} ug/m3  [aa c0 " in text
    assert " bad checksums" in text and not text.splitlines()[-1].count(" 0 bad checksums")


async def test_probe_exits_1_when_no_frame_arrives(tmp_path: Path) -> None:
    master, slave = os.openpty()  # a port where nothing talks
    tty.setraw(slave)
    try:
        out = io.StringIO()
        code = await probe(os.ttyname(slave), "pms5003", seconds=0.3, out=out)
    finally:
        os.close(slave)
        os.close(master)
    assert code == 1
    assert out.getvalue().splitlines()[-1] == "0 readings, 0 bad checksums, 0 bytes skipped"
