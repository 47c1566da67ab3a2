"""`python -m gateway.sim snmp`: a small SNMP agent that serves a cabinet UPS (RFC 1628's
UPS-MIB) whose mains fail on a schedule, for demos, the e2e tests and trying a config by hand.

It is pysnmp's own command responder (GET, GETNEXT, GETBULK; v2c and v3 authPriv) over a
dict-backed MIB: it runs wherever the gateway is installed (net-snmp's snmpd needs a system
package and root-owned files), its values move in-process, and it can play an agent with a
small message limit (``--max-varbinds``: a GET of more OIDs is answered ``tooBig``), which
snmpd cannot be made to do. The passphrases are given on the command line: it is a simulator.

    python -m gateway.sim snmp --port 16161 [--community public]
        [--user ups --auth-key authpass1 --priv-key privpass1]
        [--outage-every 60s --outage-for 20s] [--max-varbinds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import signal
import time
from collections.abc import Callable
from typing import Any

from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config, engine
from pysnmp.entity.rfc3413 import cmdrsp, context
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.smi import error as smi_error
from pysnmp.smi import instrum

from gateway.sources.snmp.client import AUTH, PRIV

Oid = tuple[int, ...]
UPS = (1, 3, 6, 1, 2, 1, 33, 1)
# The UPS's OIDs, for a config's points (README.md's sample uses them).
OIDS = {
    "sys_descr": (1, 3, 6, 1, 2, 1, 1, 1, 0),
    "sys_uptime": (1, 3, 6, 1, 2, 1, 1, 3, 0),
    "battery_status": (*UPS, 2, 1, 0),  # 2 normal, 3 low, 4 depleted
    "seconds_on_battery": (*UPS, 2, 2, 0),
    "charge": (*UPS, 2, 4, 0),  # %
    "battery_voltage": (*UPS, 2, 5, 0),  # 0.1 V
    "battery_temperature": (*UPS, 2, 7, 0),  # degC
    "input_voltage": (*UPS, 3, 3, 1, 3, 1),  # V
    "output_source": (*UPS, 4, 1, 0),  # 3 normal (mains), 5 battery
    "output_load": (*UPS, 4, 4, 1, 5, 1),  # %
    "in_octets": (1, 3, 6, 1, 2, 1, 2, 2, 1, 10, 1),  # a Counter32 that wraps
}


class UpsModel:
    """The UPS's values at a time: on mains, or on battery for the last ``outage_for`` seconds
    of every ``outage_every`` (0: never)."""

    def __init__(self, outage_every: float, outage_for: float, started: float) -> None:
        self.outage_every = outage_every
        self.outage_for = outage_for
        self.started = started

    def values(self, now: float) -> dict[Oid, Any]:
        up = now - self.started
        # each period starts on mains; the mains fail for its last outage_for seconds
        every = self.outage_every
        into = up % every - (every - self.outage_for) if every > 0 else -1.0
        on_battery = into >= 0
        since = into if on_battery else 0.0
        charge = max(0, 100 - int(since / 6)) if on_battery else 100
        return {
            OIDS["sys_descr"]: rfc1902.OctetString("street-gateway simulated UPS 1500VA"),
            OIDS["sys_uptime"]: rfc1902.TimeTicks(int(up * 100) % 2**32),
            OIDS["battery_status"]: rfc1902.Integer32(3 if charge < 25 else 2),
            OIDS["seconds_on_battery"]: rfc1902.Integer32(int(since)),
            OIDS["charge"]: rfc1902.Integer32(charge),
            OIDS["battery_voltage"]: rfc1902.Integer32(270 if on_battery else 273),
            OIDS["battery_temperature"]: rfc1902.Integer32(31),
            OIDS["input_voltage"]: rfc1902.Integer32(0 if on_battery else 231),
            OIDS["output_source"]: rfc1902.Integer32(5 if on_battery else 3),
            OIDS["output_load"]: rfc1902.Integer32(38),
            OIDS["in_octets"]: rfc1902.Counter32(int(up * 125_000) % 2**32),
        }


class DictMib(instrum.AbstractMibInstrumController):  # type: ignore[misc]
    """GET and GETNEXT over ``values()`` (OID -> SNMP value), looked up afresh per request."""

    def __init__(self, values: Callable[[], dict[Oid, Any]], max_varbinds: int = 0) -> None:
        self._values = values
        self._max = max_varbinds

    def read_variables(self, *varbinds: Any, **context: Any) -> list[tuple[Any, Any]]:
        if self._max and len(varbinds) > self._max:
            raise smi_error.TooBigError()
        table = self._values()
        return [(name, table.get(tuple(name), rfc1905.noSuchObject)) for name, _ in varbinds]

    def read_next_variables(self, *varbinds: Any, **context: Any) -> list[tuple[Any, Any]]:
        table = self._values()
        keys = sorted(table)
        out: list[tuple[Any, Any]] = []
        for name, _ in varbinds:
            at = bisect.bisect_right(keys, tuple(name))
            if at == len(keys):
                out.append((name, rfc1905.endOfMibView))
            else:
                out.append((rfc1902.ObjectName(keys[at]), table[keys[at]]))
        return out


def start_agent(
    host: str,
    port: int,
    mib: DictMib,
    *,
    community: str | None = "public",
    user: tuple[str, str, str] | None = None,
    auth: str = "SHA",
    priv: str = "AES",
) -> engine.SnmpEngine:
    """An agent on (host, port) serving ``mib``, on the running loop; stop it with
    ``close_dispatcher()``. ``user``: (name, auth passphrase, priv passphrase) for v3."""
    snmp = engine.SnmpEngine()
    config.add_transport(
        snmp, udp.DOMAIN_NAME, udp.UdpAsyncioTransport().open_server_mode((host, port))
    )
    everything = (1,)
    if community is not None:
        config.add_v1_system(snmp, "street-gateway-sim", community)
        config.add_vacm_user(snmp, 2, "street-gateway-sim", "noAuthNoPriv", everything)
    if user is not None:
        name, auth_key, priv_key = user
        config.add_v3_user(snmp, name, AUTH[auth], auth_key, PRIV[priv], priv_key)
        config.add_vacm_user(snmp, 3, name, "authPriv", everything)
    contexts = context.SnmpContext(snmp)
    contexts.unregister_context_name(b"")
    contexts.register_context_name(b"", mib)
    cmdrsp.GetCommandResponder(snmp, contexts)
    cmdrsp.NextCommandResponder(snmp, contexts)
    cmdrsp.BulkCommandResponder(snmp, contexts)
    return snmp


def _duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.sim snmp", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=16161)
    parser.add_argument("--community", default="public", help="v2c community (default public)")
    parser.add_argument("--user", help="a v3 user (authPriv), with --auth-key and --priv-key")
    parser.add_argument("--auth", choices=sorted(AUTH), default="SHA")
    parser.add_argument("--auth-key", default="authpass1")
    parser.add_argument("--priv", choices=sorted(PRIV), default="AES")
    parser.add_argument("--priv-key", default="privpass1")
    parser.add_argument("--outage-every", type=_duration, default=60.0, help="0: never (60s)")
    parser.add_argument("--outage-for", type=_duration, default=20.0, help="(20s)")
    parser.add_argument("--max-varbinds", type=int, default=0, help="tooBig above (0: no limit)")
    args = parser.parse_args(argv)
    model = UpsModel(args.outage_every, args.outage_for, time.monotonic())
    mib = DictMib(lambda: model.values(time.monotonic()), args.max_varbinds)
    user = (args.user, args.auth_key, args.priv_key) if args.user else None
    asyncio.run(_serve(args, mib, user))
    return 0


async def _serve(args: argparse.Namespace, mib: DictMib, user: Any) -> None:
    host, port = args.host, args.port
    snmp = start_agent(
        host, port, mib, community=args.community, user=user, auth=args.auth, priv=args.priv
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"snmp sim: a UPS on udp {host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        snmp.close_dispatcher()
