"""`street-gateway identity` and `street-gateway verify` (docs/transparency.md)."""

from __future__ import annotations

import argparse
import asyncio
import binascii
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.console import add_config_argument, load_or_report
from gateway.errors import GatewayError
from gateway.identity import load_identity, read_public_key
from gateway.keys import PublicKey
from gateway.seals.verify import check, collect, describe
from gateway.sources.registry import installed
from gateway.uplink.compression import decode_samples_payload

# An archive line longer than this is refused, not read whole: a 1 MiB message (verify
# --broker's bound) in base64 fits.
MAX_LINE = 2 * 1024 * 1024


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
                        help="archive files: JSON lines {\"topic\", \"payload\"} or "
                             "{\"topic\", \"payload_b64\"} (docs/transparency.md)")  # fmt: skip
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


def parse_payload(topic: str, payload: bytes) -> Any:
    """A message's bytes as verify reads them: JSON, or on ``.../samples.zst`` one zstd frame of
    JSON, inflated by the one bounded reader; raises ValueError for anything else."""
    if topic.endswith("/samples.zst"):
        return decode_samples_payload(payload)  # UndecodablePayload is a ValueError
    return json.loads(payload)


@dataclass
class Archive:
    """The messages of archive files, JSON lines ``{"topic", "payload": <the message's JSON>}``
    or ``{"topic", "payload_b64": <base64 of the message's bytes>}`` (how an archiver keeps a
    binary message, e.g. a ``samples.zst`` frame); a line that is neither is counted."""

    paths: list[Path]
    refused: int = 0

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for path in self.paths:
            with path.open("rb") as file:
                while line := file.readline(MAX_LINE + 1):
                    if not line.strip():
                        continue
                    if len(line) > MAX_LINE:
                        self.refused += 1
                        _skip_rest_of_line(file, line)
                        continue
                    try:
                        yield _record(json.loads(line))
                    except (ValueError, KeyError, TypeError, RecursionError):
                        self.refused += 1


def _skip_rest_of_line(file: Any, head: bytes) -> None:
    while not head.endswith(b"\n") and (head := file.readline(MAX_LINE)):
        pass


def _record(record: Any) -> tuple[str, Any]:
    topic = str(record["topic"])
    if "payload_b64" in record:
        raw = binascii.a2b_base64(str(record["payload_b64"]), strict_mode=True)
        return topic, parse_payload(topic, raw)
    return topic, record["payload"]


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
        parse=parse_payload,
        ca_file=args.ca_file,
        username=args.username,
        password=read_secret(args.password_file) if args.password_file else None,
    )
    if got.refused:
        print(
            f"verify: {got.refused} messages refused (over 1 MiB, not JSON, or a samples.zst "
            "frame that does not decode)",
            file=sys.stderr,
        )
    return got.messages


def _keys(folder: Path) -> dict[str, PublicKey]:
    return {path.stem: read_public_key(path) for path in sorted(folder.glob("*.pub"))}


def _verify(args: argparse.Namespace) -> int:
    try:
        keys = _keys(args.keys)
        if args.inputs:
            archive = Archive(args.inputs)
            fleet = collect(archive)
            if archive.refused:
                print(
                    f"verify: {archive.refused} archive lines refused (over {MAX_LINE} bytes, "
                    "not JSON, or a payload that does not decode)",
                    file=sys.stderr,
                )
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
