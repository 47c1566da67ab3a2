"""`street-gateway probe snmp`: walk an agent's subtree and print each OID with its type and value.

For commissioning at the cabinet: which OIDs a UPS or a router answers, and with which SNMP
type, before writing its points. The credentials come from files (``--community-file``, or
``--user`` with ``--auth-key-file`` and ``--priv-key-file``), or from a source of a config
(``-c CONFIG --source NAME``). Exit 0 when the agent answered (even with an empty subtree), 1
when it did not (a timeout, a refused key), 2 for a usage mistake.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from gateway.console import add_config_argument, load_or_report
from gateway.errors import DeviceError, ParseError
from gateway.sources.registry import installed
from gateway.sources.snmp.client import AUTH, PRIV, Credentials, SnmpClient
from gateway.sources.snmp.config import OID_PATTERN, SnmpSource, read_key
from gateway.sources.snmp.values import convert, snmp_type

EXIT_OK = 0
EXIT_NO_ANSWER = 1
EXIT_USAGE = 2
DEFAULT_WALK = "1.3.6.1.2.1.1"  # SNMPv2-MIB::system: what the device says it is


def register(probes: Any) -> None:
    snmp = probes.add_parser("snmp", help="walk an SNMP agent's subtree and print its values")
    add_arguments(snmp)
    snmp.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="the agent's address (default: the source's)")
    parser.add_argument("--port", type=int, default=None, help="UDP port (161)")
    parser.add_argument(
        "--community-file", type=Path, help="v2c: a file holding the community (else: public)"
    )
    parser.add_argument("--user", help="v3 (authPriv): the USM user")
    parser.add_argument("--auth-protocol", choices=sorted(AUTH), default="SHA")
    parser.add_argument("--auth-key-file", type=Path, help="v3: a file holding the auth passphrase")
    parser.add_argument("--priv-protocol", choices=sorted(PRIV), default="AES")
    parser.add_argument("--priv-key-file", type=Path, help="v3: a file holding the priv passphrase")
    add_config_argument(parser)
    parser.add_argument("--source", help="an snmp source of the config: its host and credentials")
    parser.add_argument(
        "--walk", default=DEFAULT_WALK, help=f"the subtree to walk (default {DEFAULT_WALK}: system)"
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per request (2)")
    parser.add_argument("--max", type=int, default=1000, help="stop after N values (1000)")


def run(args: argparse.Namespace) -> int:
    if not re.match(OID_PATTERN, args.walk):
        print(f"probe snmp: --walk {args.walk!r} is not a dotted OID", file=sys.stderr)
        return EXIT_USAGE
    try:
        target = _target(args)
    except ValueError as exc:
        print(f"probe snmp: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if target is None:
        return EXIT_USAGE
    host, port, credentials, timeout = target
    client = SnmpClient(host, port, credentials, timeout)
    # a walk is many requests, each with the timeout: the whole walk gets a generous bound
    bound = timeout * (args.max + 2)
    return asyncio.run(_walk(client, args.walk.lstrip("."), args.max, bound, sys.stdout))


def _target(args: argparse.Namespace) -> tuple[str, int, Credentials, float] | None:
    """host, port, credentials and timeout: the command line's, else the source's."""
    source: SnmpSource | None = None
    if args.source is not None:
        loaded = load_or_report(args.config, installed())
        if loaded is None:
            return None
        found = [s for s in loaded.config.sources if s.name == args.source]
        if not found or not isinstance(found[0], SnmpSource):
            names = [s.name for s in loaded.config.sources if isinstance(s, SnmpSource)]
            raise ValueError(
                f"no snmp source {args.source!r} in {loaded.path} "
                f"(snmp sources: {', '.join(names) or 'none'})"
            )
        source = found[0]
    host = args.host or (source.host if source else None)
    if host is None:
        raise ValueError("give --host, or -c CONFIG --source NAME")
    port = args.port or (source.port if source else 161)
    timeout = args.timeout or (source.timeout if source else 2.0)
    if args.user is not None:
        if args.auth_key_file is None or args.priv_key_file is None:
            raise ValueError("--user needs --auth-key-file and --priv-key-file (authPriv)")
        credentials = Credentials(
            "3",
            user=args.user,
            auth_protocol=args.auth_protocol,
            auth_key=read_key(args.auth_key_file),
            priv_protocol=args.priv_protocol,
            priv_key=read_key(args.priv_key_file),
        )
    elif args.community_file is not None:
        credentials = Credentials("2c", community=read_key(args.community_file))
    elif source is not None:
        credentials = Credentials.of(source)
    else:
        credentials = Credentials("2c", community="public")
    return host, port, credentials, timeout


async def _walk(client: SnmpClient, oid: str, limit: int, bound_s: float, out: TextIO) -> int:
    shown = 0
    try:
        async with asyncio.timeout(bound_s):
            async for name, value in client.walk(oid):
                print(f"{name} = {_value(value)}", file=out, flush=True)
                shown += 1
                if shown >= limit:
                    print(f"# stopped after {limit} values (--max)", file=out)
                    break
    except (DeviceError, TimeoutError) as exc:
        why = str(exc) or "no answer"
        print(f"probe snmp: {client.host}:{client.port}: {why}", file=sys.stderr)
        return EXIT_NO_ANSWER
    finally:
        client.close()
    if not shown:
        print(f"# the agent has nothing under {oid}", file=out)
    return EXIT_OK


def _value(value: Any) -> str:
    kind = snmp_type(value)
    try:
        text = convert("string", None, value)
    except ParseError as exc:
        return f"{kind}: ({exc})"
    return f"{kind}: {text!r}" if kind in ("OctetString", "Opaque", "Bits") else f"{kind}: {text}"
