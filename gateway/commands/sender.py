"""`street-gateway command`: an operator signs a command, publishes it on the gateway's
``P/G/commands`` and waits for its result on ``P/G/results`` (docs/commands.md).

Each op is one entry of :data:`OPS`: its arguments and how they become the command's keys
(``write DEVICE/POINT VALUE``; ``config FILE``, the fleet's remote config, whose result may take
up to the gateway's ``fleet.confirm_within``: its ``--timeout`` is 6 minutes by default, the
default 5 minutes and one more). Exit codes: 0 the result is ``done``; 1 ``refused`` or
``failed``; 2 bad arguments or an unreadable key; 3 no result within ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.addresses import parse_server
from gateway.commands.message import ID_PATTERN, NAME_PATTERN, sign
from gateway.config import parse_duration
from gateway.errors import GatewayError
from gateway.fleet.remote import MAX_YAML
from gateway.keys import SigningKey

EXIT_DONE, EXIT_NOT_DONE, EXIT_USAGE, EXIT_NO_RESULT = 0, 1, 2, 3
MAX_RESULT_BYTES = 64 * 1024  # a result is a few hundred bytes; a bigger message is not one


@dataclass(frozen=True)
class Op:
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    keys: Callable[[argparse.Namespace], dict[str, Any]]  # the command's keys for this op
    timeout_s: float = 30.0  # how long to wait for the result unless --timeout says


def _write_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", metavar="DEVICE/POINT", help="the writable point, e.g. barrier-1/closed"
    )
    parser.add_argument(
        "value", metavar="VALUE", help='JSON (true, 42, 12.5, "text"), else a string'
    )


def _write_keys(args: argparse.Namespace) -> dict[str, Any]:
    device, sep, point = str(args.target).partition("/")
    if not sep or not NAME_PATTERN.match(device) or not NAME_PATTERN.match(point):
        raise ValueError(f"{args.target!r} is not DEVICE/POINT")
    try:
        value = json.loads(args.value)
    except ValueError:
        value = args.value
    if isinstance(value, list | dict) or value is None:
        raise ValueError(f"{args.value!r}: a value is true, false, a number or a string")
    return {"device": device, "point": point, "value": value}


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", type=Path, help="the whole config (YAML)")


def _config_keys(args: argparse.Namespace) -> dict[str, Any]:
    with args.file.open("rb") as f:
        text = f.read(MAX_YAML + 1)
    if len(text) > MAX_YAML:
        raise ValueError(f"{args.file}: over the 1 MiB a config may be")
    return {"yaml": text.decode("utf-8")}  # UnicodeDecodeError is a ValueError


# op -> how it is given and what it sends
OPS: dict[str, Op] = {
    "write": Op("write a value to a writable point", _write_arguments, _write_keys),
    # the gateway checks it, tries it and keeps it or rolls it back within confirm_within
    "config": Op("replace the gateway's config (docs/fleet.md)", _config_arguments, _config_keys,
                 timeout_s=360.0),
}  # fmt: skip


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "command",
        help="send a signed command to a gateway and print its result",
        description="Sign a command with the operator's Ed25519 key, publish it on "
        "P/G/commands and wait for its result. Exit 0 done, 1 refused or failed, "
        "2 bad arguments, 3 no result in time.",
    )
    parser.add_argument("--broker", required=True, help="broker URL, e.g. mqtts://broker:8883")
    parser.add_argument("--prefix", default="street-gateway", help="topic prefix")
    parser.add_argument(
        "--key", required=True, type=Path, help="the operator's private key (PKCS#8 PEM)"
    )
    parser.add_argument("--by", required=True, help="the key's name in the gateway's trusted_keys")
    parser.add_argument("--gateway", required=True, help="the gateway's id")
    parser.add_argument(
        "--timeout",
        type=_duration,
        default=None,
        help="wait this long for the result (default 30s; for config 6m: cover the gateway's "
        "fleet.confirm_within)",
    )
    parser.add_argument("--id", default=None, help="the command's id (default: a random one)")
    ops = parser.add_subparsers(dest="op", metavar="OP", required=True)
    for name, op in OPS.items():
        op.arguments(ops.add_parser(name, help=op.help))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        key = SigningKey.from_pem(args.key.read_bytes()[:4096])
        keys = OPS[args.op].keys(args)
        scheme, host, port = parse_server(args.broker)
    except (OSError, ValueError, GatewayError) as exc:
        print(f"street-gateway command: {exc}", file=sys.stderr)
        return EXIT_USAGE
    cid = args.id or f"{args.by}-{secrets.token_hex(6)}"
    if not ID_PATTERN.match(cid):
        print(f"street-gateway command: {cid!r} is not an id", file=sys.stderr)
        return EXIT_USAGE
    doc = {"id": cid, "ts": int(time.time() * 1000), "op": args.op, **keys, "by": args.by}
    signed = sign(doc, key.sign)
    timeout_s = args.timeout if args.timeout is not None else OPS[args.op].timeout_s
    base = f"{args.prefix}/{args.gateway}"
    tls = ssl.create_default_context() if scheme == "mqtts" else None
    result = asyncio.run(
        exchange(
            host,
            port,
            tls=tls,
            topics=(f"{base}/commands", f"{base}/results"),
            command=signed,
            timeout_s=timeout_s,
        )
    )
    if result is None:
        print(f"street-gateway command: no result for {cid} within {timeout_s:g}s", file=sys.stderr)
        return EXIT_NO_RESULT
    print(json.dumps(result, ensure_ascii=False))
    problems = result.get("problems")
    for line in problems if isinstance(problems, list) else ():  # a config's check lines
        print(f"  {line}", file=sys.stderr)
    return EXIT_DONE if result.get("state") == "done" else EXIT_NOT_DONE


async def exchange(
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None,
    topics: tuple[str, str],  # (commands, results)
    command: dict[str, Any],
    timeout_s: float,
) -> dict[str, Any] | None:
    """Publish ``command`` and return its result (None after ``timeout_s``)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            async with aiomqtt.Client(
                host, port, tls_context=tls, identifier=f"sgw-command-{command['id']}"
            ) as client:
                await client.subscribe(topics[1], qos=1)  # before the command: none missed
                body = json.dumps(command, ensure_ascii=False).encode()  # a config: compact
                await client.publish(topics[0], body, qos=1)
                async for message in client.messages:
                    payload = bytes(message.payload)
                    if len(payload) > MAX_RESULT_BYTES:
                        continue
                    try:
                        doc = json.loads(payload)
                    except (ValueError, RecursionError):
                        continue
                    if isinstance(doc, dict) and doc.get("id") == command["id"]:
                        return doc
    return None
