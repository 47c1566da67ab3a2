"""`street-gateway audit`: the fleet's completeness proof, upstream.

Wires the broker consumer, the state file and the report; see docs/audit.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from gateway.audit.consumer import BrokerOptions, Consumer, client_id_for
from gateway.audit.health import HealthBoard
from gateway.audit.ledger import Fleet, merge_fleets
from gateway.audit.report import exit_code, summary_line, table, to_json
from gateway.audit.seals import SealBook
from gateway.audit.serve import fleet_server
from gateway.audit.sparkplug import TOPIC_FILTER, SparkplugFleet
from gateway.audit.store import AuditStateError, AuditStore, default_state_path
from gateway.config import is_loopback, parse_duration, parse_server, read_secret, split_listen
from gateway.errors import ConfigError, GatewayError, UplinkError
from gateway.identity import read_public_key
from gateway.model import format_ago, now_ms

EXIT_USAGE = 2


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "audit",
        help="upstream: report per gateway what arrived and what is missing",
        description="Subscribe to a fleet's topics and prove, per gateway, that every seq was "
        "received or declared given up. Exit 0 when no hole is older than --grace, else 1.",
    )
    parser.add_argument("--broker", help="broker URL, e.g. mqtt://127.0.0.1:1883 or mqtts://...")
    parser.add_argument("--prefix", default="street-gateway", help="topic prefix")
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help=f"state file (default {default_state_path()}, from $XDG_STATE_HOME)",
    )
    parser.add_argument(
        "--format",
        choices=("json", "sparkplug-b"),
        default="json",
        help="the fleet's uplink.format (default json); sparkplug-b runs as a service, and "
        "--once then reports from that service's --state",
    )
    parser.add_argument("--once", action="store_true", help="report once the stream settles")
    parser.add_argument("--json", action="store_true", help="print the JSON document")
    parser.add_argument("--settle", type=_duration, default=5.0, help="quiet time (default 5s)")
    parser.add_argument(
        "--grace", type=_duration, default=600.0, help="hole age that counts as loss (10m)"
    )
    parser.add_argument("--client-id", default=None, help="MQTT client id (default: from --state)")
    parser.add_argument("--username", default=None)
    parser.add_argument("--password-file", type=Path, default=None)
    parser.add_argument("--ca-file", type=Path, default=None, help="CA bundle for mqtts://")
    parser.add_argument(
        "--group", default=None, help="shared subscription group: $share/GROUP/... (workers)"
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        metavar="STATE",
        help="report the union of several workers' state files; no broker",
    )
    parser.add_argument(
        "--refresh",
        type=_duration,
        default=None,
        help="display period without --once (default 1s on a terminal, else 60s)",
    )
    parser.add_argument(
        "--serve",
        default=None,
        metavar="HOST:PORT",
        help="keep running and serve the fleet view (page, /metrics) there; loopback unless "
        "--token-file is given",
    )
    parser.add_argument(
        "--token-file", type=Path, default=None, help="bearer token the fleet view asks for"
    )
    parser.add_argument(
        "--keys",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of <gateway>.pub PEMs: check each gateway's seals too, as verify does "
        "(docs/audit.md)",
    )
    parser.set_defaults(func=_audit)


def keys_problem(args: argparse.Namespace) -> str | None:
    """Why ``--keys`` cannot run as asked (None: it can); reads the keys into ``args``."""
    args.seal_keys = None
    if args.keys is None:
        return None
    if args.format == "sparkplug-b" or args.merge or args.group:
        return (
            "--keys: a seal and all its items must reach one audit reading JSON topics: not "
            'with --format sparkplug-b, --merge or --group (docs/audit.md, "Seals")'
        )
    try:
        args.seal_keys = {p.stem: read_public_key(p) for p in sorted(args.keys.glob("*.pub"))}
    except (GatewayError, OSError) as exc:
        return f"--keys: {exc}"
    if not args.seal_keys:
        return f"--keys {args.keys}: no <gateway>.pub file there"
    return None


def _audit(args: argparse.Namespace) -> int:
    problem = keys_problem(args)
    if problem:
        print(f"audit: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.merge:
        return asyncio.run(merge(args.merge, args.json, args.grace))
    if args.format == "sparkplug-b":
        if args.group:
            print("audit: --group: a Sparkplug node's births and data must reach one audit",
                  file=sys.stderr)  # fmt: skip
            return EXIT_USAGE
        if args.once:  # QoS 0 data are not queued for an absent audit: read the running one's
            return report_state(args.state or default_state_path(), args)
    if not args.broker:
        print("audit: --broker is required (or --merge STATE...)", file=sys.stderr)
        return EXIT_USAGE
    if args.serve:
        problem = serve_problem(args)
        if problem:
            print(f"audit: {problem}", file=sys.stderr)
            return EXIT_USAGE
    try:
        parse_server(args.broker)
        password = read_secret(args.password_file) if args.password_file else None
    except ValueError as exc:
        print(f"audit: --broker {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    state = args.state or default_state_path()
    opts = BrokerOptions(
        url=args.broker,
        client_id=args.client_id or client_id_for(state),
        username=args.username,
        password=password,
        ca_file=args.ca_file,
    )
    try:
        return asyncio.run(run(args, state, opts))
    except (AuditStateError, UplinkError) as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 1


def _report(fleet: Fleet, as_json: bool, grace: float) -> int:
    now = now_ms()
    print(to_json(fleet, now) if as_json else table(fleet, now, grace), flush=True)
    return exit_code(fleet, now, grace)


async def merge(paths: list[Path], as_json: bool, grace: float) -> int:
    fleets = []
    try:
        for path in paths:
            async with AuditStore(path, readonly=True) as store:
                fleets.append(await store.load(""))
    except AuditStateError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 1
    return _report(merge_fleets(fleets, now_ms()), as_json, grace)


def report_state(state: Path, args: argparse.Namespace) -> int:
    """``--once --format sparkplug-b``: the report of what the running audit has committed."""
    if not state.exists():
        print(
            f"audit: no audit state at {state}: with sparkplug-b the audit runs as a service "
            "(street-gateway audit --format sparkplug-b --broker URL --state FILE) and --once "
            "reads its state",
            file=sys.stderr,
        )
        return EXIT_USAGE
    written = max(p.stat().st_mtime for p in (state, Path(f"{state}-wal")) if p.exists())
    print(f"audit: from {state}, written {format_ago(int(written * 1000), now_ms())}",
          file=sys.stderr)  # fmt: skip
    return asyncio.run(_report_stored(state, args))


async def _report_stored(state: Path, args: argparse.Namespace) -> int:
    try:
        async with AuditStore(state, readonly=True) as store:
            fleet = await store.load("", SparkplugFleet)
    except AuditStateError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 1
    return _report(fleet, args.json, args.grace)


async def run(args: argparse.Namespace, state: Path, opts: BrokerOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with AuditStore(state) as store:
            sparkplug = args.format == "sparkplug-b"
            seals = None
            if args.seal_keys is not None:
                seals = SealBook(args.seal_keys, wait_ms=int(args.grace * 1000))
            fleet = await store.load(args.prefix, SparkplugFleet if sparkplug else Fleet, seals)
            topics = [TOPIC_FILTER] if sparkplug else None
            board = HealthBoard(args.prefix) if args.serve else None
            consumer = Consumer(opts, fleet, store, group=args.group, topics=topics, health=board)
            if args.once:
                await consumer.run(stop, settle=args.settle)
                if seals is not None:  # the seals that waited long enough, checked and kept
                    seals.settle_all(now_ms())
                    await store.save(fleet)
                code = _report(fleet, args.json, args.grace)
                return 0 if stop.is_set() else code
            async with asyncio.TaskGroup() as tg:
                tg.create_task(consumer.run(stop), name="audit-consumer")
                tg.create_task(_display(fleet, args, stop), name="audit-display")
                if board is not None:
                    tg.create_task(serve(fleet, board, args, stop), name="audit-serve")
            return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _display(fleet: Fleet, args: argparse.Namespace, stop: asyncio.Event) -> None:
    tty = sys.stdout.isatty() and not args.json
    period = args.refresh or (1.0 if tty else 60.0)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(period):
                await stop.wait()
        now = now_ms()
        if args.json:
            print(to_json(fleet, now), flush=True)
        elif tty:
            print("\x1b[H\x1b[2J" + table(fleet, now, args.grace), flush=True)
        else:
            print(summary_line(fleet, now, args.grace), flush=True)


def serve_problem(args: argparse.Namespace) -> str | None:
    """Why ``--serve`` cannot run as asked (None: it can); reads the token into ``args``."""
    if args.once or args.merge:
        return "--serve keeps running: not with --once or --merge"
    try:
        args.serve_at = split_listen(args.serve)
        args.token = read_secret(args.token_file) if args.token_file else None
    except ValueError as exc:
        return f"--serve {exc}"
    except ConfigError as exc:
        return f"--token-file: {exc}"
    if not is_loopback(args.serve_at[0]) and not args.token:
        return f"--serve {args.serve}: not a loopback address; give --token-file"
    return None


async def serve(
    fleet: Fleet, board: HealthBoard, args: argparse.Namespace, stop: asyncio.Event
) -> None:
    host, port = args.serve_at
    async with fleet_server(
        fleet, board, host=host, port=port, token=args.token, grace_s=args.grace
    ) as server:
        print(f"audit: fleet view on http://{host}:{server.port}/", file=sys.stderr, flush=True)
        await stop.wait()
