"""The snmp source against a real net-snmp snmpd (values the test writes), pysnmp's own agent
(the simulator, for tooBig), and hostile peers on loopback UDP: silence, a wrong community, a
wrong v3 key, answers with the wrong request id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api, errind
from pysnmp.smi import error as smi_error
from snmp_support import (
    COMMUNITY,
    CONTROLLED,
    USERS,
    Snmpd,
    free_udp_port,
    running_snmpd,
    secret_file,
)
from support import LOOPBACK

from gateway.errors import DeviceError, DeviceTimeout
from gateway.model import Sample
from gateway.sources.snmp.client import INDICATIONS, mapped_error
from gateway.sources.snmp.config import SnmpSource
from gateway.sources.snmp.sim import OIDS, DictMib, UpsModel, start_agent
from gateway.sources.snmp.source import SnmpPollSource

OUTPUT_SOURCE = f"{CONTROLLED}.1.4.1.0"  # upsOutputSource: 3 mains, 5 battery
CHARGE = f"{CONTROLLED}.1.2.4.0"  # upsEstimatedChargeRemaining, %
VOLTAGE = f"{CONTROLLED}.1.2.5.0"  # upsBatteryVoltage, 0.1 V
OCTETS = f"{CONTROLLED}.1.9.9.0"  # a Counter64 the test controls
MODEL = f"{CONTROLLED}.1.1.2.0"  # upsIdentModel
MISSING = f"{CONTROLLED}.1.7.7.0"  # nothing there

UPS_POINTS: list[dict[str, Any]] = [
    {"name": "output_source", "oid": f".{OUTPUT_SOURCE}", "type": "int"},
    {"name": "charge", "oid": CHARGE, "type": "gauge", "unit": "%"},
    {"name": "battery_v", "oid": VOLTAGE, "type": "gauge", "scale": 0.1, "unit": "V"},
    {"name": "octets", "oid": OCTETS, "type": "counter", "unit": "B"},
    {"name": "model", "oid": MODEL, "type": "string"},
]


@pytest.fixture
def snmpd(tmp_path: Path) -> Iterator[Snmpd]:
    with running_snmpd(tmp_path / "snmpd") as agent:
        agent.set(OUTPUT_SOURCE, "integer", 3)
        agent.set(CHARGE, "gauge", 97)
        agent.set(VOLTAGE, "gauge", 273)
        agent.set(OCTETS, "counter64", 2**63 + 5)  # past a double's 53 bits: sent exactly
        agent.set(MODEL, "string", "Smart-UPS 1500")
        yield agent


def v2c_source(tmp_path: Path, port: int, **overrides: Any) -> SnmpSource:
    raw: dict[str, Any] = {
        "name": "ups-1",
        "kind": "snmp",
        "host": LOOPBACK,
        "port": port,
        "community_file": str(secret_file(tmp_path / "community", COMMUNITY)),
        "interval": "100ms",
        "timeout": "2s",  # a loaded test machine is slow; the failure tests give less
        "retries": 0,
        "backoff_max": "200ms",
        "points": UPS_POINTS,
    }
    raw.update(overrides)
    source = SnmpSource.model_validate(raw)
    assert source.check(("sources", 0), None) == []
    return source


def v3_source(tmp_path: Path, port: int, user: str, **overrides: Any) -> SnmpSource:
    auth, auth_key, priv, priv_key = USERS[user]
    return v2c_source(
        tmp_path,
        port,
        version="3",
        community_file=None,
        user=user,
        auth={"protocol": auth, "key_file": str(secret_file(tmp_path / f"{user}.auth", auth_key))},
        priv={"protocol": priv, "key_file": str(secret_file(tmp_path / f"{user}.priv", priv_key))},
        **overrides,
    )


@contextlib.asynccontextmanager
async def running(source: SnmpPollSource) -> AsyncIterator[None]:
    task = asyncio.create_task(source.run(), name=f"source {source.snmp.name}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(predicate: Callable[[], object], within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_a_v2c_poll_reads_every_type_in_one_get(tmp_path: Path, snmpd: Snmpd) -> None:
    samples: list[Sample] = []
    source = SnmpPollSource(v2c_source(tmp_path, snmpd.port), samples.append)
    async with running(source):
        await until(lambda: len(samples) >= 3)
    stats = source.cores[0].stats
    assert samples[0].device == "ups-1"
    values = samples[0].values
    assert values == {
        "output_source": 3,
        "charge": 97,
        "battery_v": pytest.approx(27.3),
        "octets": 2**63 + 5,
        "model": "Smart-UPS 1500",
    }
    assert type(values["octets"]) is int and type(values["output_source"]) is int
    # all five points in one GET a poll (one more may have been in flight at the cancel)
    assert stats.reads_ok <= stats.requests_total <= stats.reads_ok + 1
    assert stats.parse_errors == 0 and stats.state == "ok" and stats.read_mode is None


async def test_values_follow_the_agent_between_polls(tmp_path: Path, snmpd: Snmpd) -> None:
    samples: list[Sample] = []
    source = SnmpPollSource(v2c_source(tmp_path, snmpd.port), samples.append)
    async with running(source):
        await until(lambda: samples)
        snmpd.set(OUTPUT_SOURCE, "integer", 5)  # the mains fail: on battery
        snmpd.set(CHARGE, "gauge", 64)
        await until(lambda: samples[-1].values["output_source"] == 5)
    assert samples[-1].values["charge"] == 64


async def test_a_missing_oid_is_a_parse_error_of_its_point_not_a_failed_device(
    tmp_path: Path, snmpd: Snmpd, caplog: pytest.LogCaptureFixture
) -> None:
    points = [*UPS_POINTS, {"name": "gone", "oid": MISSING, "type": "int"}]
    samples: list[Sample] = []
    source = SnmpPollSource(v2c_source(tmp_path, snmpd.port, points=points), samples.append)
    with caplog.at_level(logging.INFO, logger="gateway.sources.snmp"):
        async with running(source):
            await until(lambda: len(samples) >= 3)
            snmpd.set(MISSING, "integer", 7)  # it appears
            await until(lambda: "gone" in samples[-1].values)
    stats = source.cores[0].stats
    assert "gone" not in samples[0].values and samples[0].values["charge"] == 97
    assert stats.state == "ok" and stats.reads_failed == 0
    assert stats.parse_errors == sum(1 for s in samples if "gone" not in s.values) >= 3
    left_out = [r for r in caplog.records if "point gone left out" in r.getMessage()]
    assert len(left_out) == 1  # logged once, not once per poll
    assert "no such" in left_out[0].getMessage()
    assert any("point gone read again" in r.getMessage() for r in caplog.records)


async def test_a_value_of_the_wrong_type_is_left_out_and_counted(
    tmp_path: Path, snmpd: Snmpd
) -> None:
    snmpd.set(CHARGE, "string", "not-a-number")
    samples: list[Sample] = []
    source = SnmpPollSource(v2c_source(tmp_path, snmpd.port), samples.append)
    async with running(source):
        await until(lambda: samples)
    assert "charge" not in samples[0].values and samples[0].values["output_source"] == 3
    assert source.cores[0].stats.parse_errors >= 1


@pytest.mark.parametrize("user", sorted(USERS))
async def test_v3_auth_priv_reads_with_keys_from_files(
    tmp_path: Path, snmpd: Snmpd, user: str
) -> None:
    samples: list[Sample] = []
    source = SnmpPollSource(v3_source(tmp_path, snmpd.port, user), samples.append)
    async with running(source):
        await until(lambda: samples)
    assert samples[0].values["charge"] == 97 and samples[0].values["model"] == "Smart-UPS 1500"


async def test_a_wrong_v3_key_fails_the_device_with_a_reason(tmp_path: Path, snmpd: Snmpd) -> None:
    config = v3_source(tmp_path, snmpd.port, "ups-sha", timeout="500ms")
    assert config.auth is not None
    secret_file(config.auth.key_file, "not-the-auth-pass")
    samples: list[Sample] = []
    source = SnmpPollSource(config, samples.append)
    async with running(source):
        await until(lambda: source.cores[0].stats.state == "down")
    stats = source.cores[0].stats
    assert samples == [] and stats.reads_ok == 0 and stats.reads_failed >= 3
    assert "auth key" in (stats.last_error or "")


async def test_a_wrong_community_is_a_timeout_and_never_blocks_another_source(
    tmp_path: Path, snmpd: Snmpd
) -> None:
    good_samples: list[Sample] = []
    bad_samples: list[Sample] = []
    good = SnmpPollSource(v2c_source(tmp_path, snmpd.port), good_samples.append)
    wrong = secret_file(tmp_path / "wrong", "not-the-community")
    bad = SnmpPollSource(
        v2c_source(tmp_path, snmpd.port, name="ups-2", community_file=str(wrong), timeout="300ms"),
        bad_samples.append,
    )
    async with running(good), running(bad):
        await until(lambda: bad.cores[0].stats.state == "down")
        polls = len(good_samples)
        await until(lambda: len(good_samples) >= polls + 5)  # still polled every 100 ms
    stats = bad.cores[0].stats
    assert bad_samples == [] and stats.reads_failed >= 3
    assert "no answer" in (stats.last_error or "")
    assert good.cores[0].stats.reads_failed == 0


async def test_an_agent_that_never_answers_is_counted_on_its_device(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOOPBACK, 0))  # takes every request, answers none
        samples: list[Sample] = []
        config = v2c_source(tmp_path, silent.getsockname()[1], timeout="300ms")
        source = SnmpPollSource(config, samples.append)
        async with running(source):
            await until(lambda: source.cores[0].stats.reads_failed >= 3)
    stats = source.cores[0].stats
    assert samples == [] and stats.state == "down" and stats.reads_ok == 0


class Mangler(asyncio.DatagramProtocol):
    """A UDP relay in front of snmpd that changes the request id of every answer (decoded
    and encoded again with pysnmp's own v2c codec), or passes them through."""

    def __init__(self, agent: tuple[str, int]) -> None:
        self.agent = agent
        self.mangle = True
        self.mangled = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.client: tuple[str, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr != self.agent:  # a request: relay it to the agent
            self.client = addr
            self.transport.sendto(data, self.agent)
            return
        if self.mangle:
            message, _ = decoder.decode(
                data, asn1Spec=api.PROTOCOL_MODULES[api.SNMP_VERSION_2C].Message()
            )
            pdu = api.v2c.apiMessage.get_pdu(message)
            # far from any id the manager will use next (pysnmp counts them up one by one)
            wrong = (int(api.v2c.apiPDU.get_request_id(pdu)) + 2**30) % 2**31
            api.v2c.apiPDU.set_request_id(pdu, wrong)
            data = encoder.encode(message)
            self.mangled += 1
        self.transport.sendto(data, self.client)


async def test_an_answer_with_the_wrong_request_id_is_refused(tmp_path: Path, snmpd: Snmpd) -> None:
    loop = asyncio.get_running_loop()
    transport, relay = await loop.create_datagram_endpoint(
        lambda: Mangler((LOOPBACK, snmpd.port)), local_addr=(LOOPBACK, 0)
    )
    try:
        samples: list[Sample] = []
        port = transport.get_extra_info("sockname")[1]
        source = SnmpPollSource(v2c_source(tmp_path, port, timeout="500ms"), samples.append)
        async with running(source):
            await until(lambda: source.cores[0].stats.reads_failed >= 3)
            assert samples == [] and relay.mangled >= 3  # answers came, none was taken
            relay.mangle = False
            await until(lambda: samples)  # the same agent, answers untouched: read again
    finally:
        transport.close()
    assert samples[0].values["charge"] == 97


async def test_an_agent_answering_too_big_is_read_in_smaller_gets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_udp_port()
    model = UpsModel(outage_every=0, outage_for=0, started=0)
    agent = start_agent(
        LOOPBACK, port, DictMib(lambda: model.values(1.0), max_varbinds=2), community=COMMUNITY
    )
    points = [
        {"name": name, "oid": ".".join(map(str, OIDS[name])), "type": "int"}
        for name in ("battery_status", "charge", "output_source", "input_voltage", "output_load")
    ]
    samples: list[Sample] = []
    try:
        source = SnmpPollSource(v2c_source(tmp_path, port, points=points), samples.append)
        with caplog.at_level(logging.WARNING, logger="gateway.sources.snmp"):
            async with running(source):
                await until(lambda: len(samples) >= 3)
    finally:
        agent.close_dispatcher()
    stats = source.cores[0].stats
    assert samples[-1].values == {
        "battery_status": 2, "charge": 100, "output_source": 3, "input_voltage": 231,
        "output_load": 38,
    }  # fmt: skip
    assert stats.parse_errors == 0 and stats.reads_failed == 0
    assert stats.read_mode is not None and "tooBig" in stats.read_mode
    assert "at most 2 OIDs" in stats.read_mode
    too_big = [r for r in caplog.records if "tooBig" in r.getMessage()]
    assert len(too_big) == 2  # 5 -> 3 -> 2, each said once; later polls ask for 2 at once


class OldStyleMib(DictMib):
    """An agent that answers a GET with an error status instead of per-varbind exceptions:
    ``noSuchName`` naming the first OID it does not have (as SNMPv1 agents do), or ``genErr``."""

    def __init__(self, values: dict[tuple[int, ...], Any], status: type[Exception]) -> None:
        super().__init__(lambda: values)
        self.values = values
        self.status = status

    def read_variables(self, *varbinds: Any, **context: Any) -> list[tuple[Any, Any]]:
        for index, (name, _) in enumerate(varbinds):
            if tuple(name) not in self.values:
                raise self.status(name=name, idx=index)
        return super().read_variables(*varbinds, **context)


def served(port: int, mib: DictMib) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def agent() -> Iterator[None]:
        engine = start_agent(LOOPBACK, port, mib, community=COMMUNITY)
        try:
            yield
        finally:
            engine.close_dispatcher()

    return agent()


def ups_points(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "oid": ".".join(map(str, OIDS[n])), "type": "int"} for n in names]


async def test_a_v1_style_no_such_name_leaves_only_that_point_out(tmp_path: Path) -> None:
    values = UpsModel(0, 0, 0).values(1.0)
    del values[OIDS["charge"]]
    port = free_udp_port()
    samples: list[Sample] = []
    # the missing OID first: pysnmp 7.1's responder names varbind 1 whenever the request has
    # more varbinds than the index it should name (cmdrsp.py: `len(varBinds) > errorIndex`)
    points = ups_points("charge", "battery_status", "output_source")
    source = SnmpPollSource(v2c_source(tmp_path, port, points=points), samples.append)
    with served(port, OldStyleMib(values, smi_error.NoSuchNameError)):
        async with running(source):
            await until(lambda: len(samples) >= 2)
    assert samples[-1].values == {"battery_status": 2, "output_source": 3}
    stats = source.cores[0].stats
    assert stats.state == "ok" and stats.reads_failed == 0 and stats.parse_errors >= 2
    assert stats.requests_total >= 2 * stats.reads_ok  # the refused GET, then the rest


async def test_a_gen_err_answer_fails_the_poll(tmp_path: Path) -> None:
    values = UpsModel(0, 0, 0).values(1.0)
    del values[OIDS["charge"]]
    port = free_udp_port()
    samples: list[Sample] = []
    config = v2c_source(tmp_path, port, points=ups_points("charge", "output_source"))
    source = SnmpPollSource(config, samples.append)
    with served(port, OldStyleMib(values, smi_error.GenError)):
        async with running(source):
            await until(lambda: source.cores[0].stats.reads_failed >= 3)
    stats = source.cores[0].stats
    assert samples == [] and stats.state == "down"
    assert stats.last_error == "the agent answered genErr (varbind 1)"


def test_every_pysnmp_error_indication_is_a_device_error_and_only_a_timeout_a_timeout() -> None:
    indications = [v for v in vars(errind).values() if isinstance(v, errind.ErrorIndication)]
    assert len(indications) > 30  # pysnmp's whole list was walked
    for indication in indications:
        error = mapped_error(indication)
        assert isinstance(error, DeviceError) and str(error)
        assert isinstance(error, DeviceTimeout) == isinstance(indication, errind.RequestTimedOut)
    assert all(issubclass(k, errind.ErrorIndication) for k in INDICATIONS)
    assert str(mapped_error(errind.wrongDigest)) == "the agent refused the auth key (wrong digest)"
