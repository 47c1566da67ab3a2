"""`street-gateway identity` and `street-gateway verify` (docs/transparency.md)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.console import add_config_argument, load_or_report
from gateway.errors import GatewayError
from gateway.identity import load_identity, read_public_key
from gateway.keys import PublicKey
from gateway.seals.verify import check, collect, describe
from gateway.sources.registry import installed

MAX_LINE = 1024 * 1024  # an archive line longer than this is refused, not read whole


def register(sub: Any) -> None:
    identity = sub.add_parser(
        "identity",
        help="print this gateway's public key and fingerprint (made when missing)",
        description="Print the public key (PEM) and its fingerprint, which the city records "
        "at commissioning; makes the key (security.identity_key) when it is missing.",
    )
    add_config_argument(identity)
    identity.set_defaults(func=_identity)

    verify = sub.add_parser(
        "verify",
        help="check the seals of what gateways sent: nothing altered, forged or dropped",
        description="Check each gateway's seals against the items received. Exit 0 when "
        "everything sealed matches, 1 otherwise, 2 on bad usage.",
    )
    verify.add_argument("--keys", type=Path, required=True, help="folder of <gateway>.pub PEMs")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--in", dest="inputs", type=Path, nargs="+",
                        help="archive files: JSON lines {\"topic\", \"payload\"}")  # fmt: skip
    source.add_argument("--broker", help="broker URL, e.g. mqtts://broker.city.example:8883")
    verify.add_argument("--prefix", default="street-gateway", help="topic prefix (--broker)")
    verify.add_argument("--settle", type=float, default=5.0,
                        help="--broker: report once no message came for this long (s)")  # fmt: skip
    verify.add_argument("--timeout", type=float, default=600.0, help="--broker: at most (s)")
    verify.add_argument("--client-id", default=None,
                        help="--broker: the persistent session's id (from --keys)")  # fmt: skip
    verify.add_argument("--username", default=None)
    verify.add_argument("--password-file", type=Path, default=None)
    verify.add_argument("--ca-file", type=Path, default=None, help="CA bundle for mqtts://")
    verify.add_argument("--json", action="store_true", help="print the JSON document")
    verify.set_defaults(func=_verify)


def _identity(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config, installed())
    if loaded is None:
        return 2
    path = loaded.config.security.identity_key
    assert path is not None
    try:
        key, where, created = load_identity(path)
    except GatewayError as exc:
        print(exc, file=sys.stderr)
        return 1
    if created:
        print(f"made {where}", file=sys.stderr)
    print(key.public.pem(), end="")
    print(key.public.fingerprint)
    return 0


def _messages(paths: list[Path]) -> Iterator[tuple[str, Any]]:
    for path in paths:
        with path.open("rb") as file:
            while line := file.readline(MAX_LINE + 1):
                if len(line) > MAX_LINE or not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    yield str(record["topic"]), record["payload"]
                except (ValueError, KeyError, TypeError):
                    continue


async def _from_broker(args: argparse.Namespace) -> list[tuple[str, Any]]:
    from gateway.config import read_secret  # noqa: PLC0415
    from gateway.seals.broker import collect_from_broker  # noqa: PLC0415

    digest = hashlib.sha256(str(args.keys.resolve()).encode()).hexdigest()[:16]
    got = await collect_from_broker(
        args.broker,
        args.prefix,
        client_id=args.client_id or f"street-gateway-verify-{digest}",
        settle_s=args.settle,
        timeout_s=args.timeout,
        ca_file=args.ca_file,
        username=args.username,
        password=read_secret(args.password_file) if args.password_file else None,
    )
    if got.refused:
        print(f"verify: {got.refused} messages refused (over 1 MiB or not JSON)", file=sys.stderr)
    return got.messages


def _keys(folder: Path) -> dict[str, PublicKey]:
    return {path.stem: read_public_key(path) for path in sorted(folder.glob("*.pub"))}


def _verify(args: argparse.Namespace) -> int:
    try:
        keys = _keys(args.keys)
        if args.inputs:
            fleet = collect(_messages(args.inputs))
        else:
            fleet = collect(asyncio.run(_from_broker(args)))
    except (GatewayError, OSError, ValueError, aiomqtt.MqttError) as exc:
        print(f"verify: {exc}", file=sys.stderr)
        return 2
    reports = [check(gw, got, keys.get(gw)) for gw, got in sorted(fleet.items())]
    if args.json:
        print(json.dumps({"gateways": [r.to_json() for r in reports]}, indent=2))
    else:
        for report in reports:
            print("\n".join(describe(report)))
    return 0 if all(r.ok() for r in reports) else 1
