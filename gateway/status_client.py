"""`street-gateway status`: ask a running daemon and print its status for a person.

The base URL is ``--url``, else ``http://<status.listen>`` from the config (a wildcard listen
address is asked on loopback). The token is read from ``--token-file``, else
``$STREET_GATEWAY_TOKEN``, else the config's ``status.token_file``. Exit codes
(docs/reference.md): 0 healthy, 1 degraded, 3 unreachable (with the reason on stderr). Plain
urllib: no event loop for one request. Spans are written as everywhere
(:func:`gateway.model.format_duration`: ``45s``, ``12m 5s``, ``3h 20m``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.config import (
    DEFAULT_STATUS_PORT,
    default_config_path,
    load_config,
    read_secret,
    split_listen,
)
from gateway.errors import ConfigError
from gateway.model import format_ago, format_duration, format_link_cost, format_value
from gateway.sources.registry import installed

EXIT_HEALTHY = 0
EXIT_DEGRADED = 1
EXIT_UNREACHABLE = 3
TOKEN_ENV = "STREET_GATEWAY_TOKEN"
TIMEOUT_S = 5.0


class Unreachable(Exception):
    """The status could not be had; the message says why, for a person."""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "status",
        help="show a running daemon's status",
        description="Ask a running daemon's status endpoint and print it. "
        "Exit 0 healthy, 1 degraded, 3 unreachable.",
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help="config file, for status.listen and status.token_file "
        "(default $STREET_GATEWAY_CONFIG or /etc/street-gateway/gateway.yaml)",
    )
    parser.add_argument("--url", default=None, help="base URL, e.g. http://127.0.0.1:8470")
    parser.add_argument(
        "--token-file", type=Path, default=None, help=f"bearer token file (or ${TOKEN_ENV})"
    )
    parser.add_argument("--json", action="store_true", help="print the /status document as is")
    parser.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    try:
        url, token = resolve_target(args.url, args.config, args.token_file)
        doc = fetch_status(url, token)
    except Unreachable as exc:
        print(f"street-gateway status: unreachable: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(json.dumps(doc, indent=2) if args.json else format_status(doc))
    return EXIT_HEALTHY if doc.get("health", {}).get("status") == "ok" else EXIT_DEGRADED


def resolve_target(
    url: str | None, config_path: Path | None, token_file: Path | None
) -> tuple[str, str | None]:
    """(base URL, token or None) from the options, the environment and the config."""
    token = _read_token(token_file) if token_file else os.environ.get(TOKEN_ENV) or None
    if url and token:
        return url.rstrip("/"), token
    path = config_path or default_config_path()
    if config_path is None and not path.exists():
        # No config at the default place: ask the default address, without a token.
        return (url or f"http://127.0.0.1:{DEFAULT_STATUS_PORT}").rstrip("/"), token
    try:
        loaded = load_config(path, installed())
    except ConfigError as exc:
        raise Unreachable(
            "cannot tell where the daemon listens: "
            + "; ".join(exc.problems)
            + " (give --url and --token-file)"
        ) from None
    if url is None:
        host, port = split_listen(loaded.config.status.listen)
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    return url.rstrip("/"), token or loaded.status_token


def _read_token(path: Path) -> str:
    try:
        return read_secret(path)
    except ConfigError as exc:
        raise Unreachable("; ".join(exc.problems)) from None


def fetch_status(base_url: str, token: str | None, timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """GET ``<base>/status``; raise :class:`Unreachable` saying why when there is no answer."""
    request = urllib.request.Request(f"{base_url}/status", headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            hint = "a wrong token" if token else f"no token (use --token-file or ${TOKEN_ENV})"
            raise Unreachable(f"{base_url} refused the request (401): {hint}") from None
        raise Unreachable(f"{base_url}/status answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise Unreachable(f"cannot connect to {base_url}: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        raise Unreachable(f"no answer from {base_url} within {timeout:g}s: {exc}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise Unreachable(f"{base_url}/status did not answer JSON; is it street-gateway?") from None
    if not isinstance(doc, dict) or "gateway" not in doc:
        raise Unreachable(f"{base_url}/status is not a street-gateway status document")
    return doc


# ---------------------------------------------------------------------------------------------
# For a person


def format_status(doc: dict[str, Any]) -> str:
    """The status document as a few aligned lines."""
    now = int(doc.get("ts") or time.time() * 1000)
    g, u, b = doc["gateway"], doc["uplink"], doc["buffer"]
    h = doc.get("health", {"status": "ok", "problems": []})
    labels = " ".join(f"{k}={v}" for k, v in (g.get("labels") or {}).items())
    lines = [
        f"gateway  {g['id']}  v{g['version']}  up {format_duration(g['uptime_s'])}  "
        f"clock {'synced' if g['clock_synced'] else 'NOT SYNCED'}"
        + (f"  {labels}" if labels else "")
        + ("  config REMOTE (remote.yaml)" if g.get("config_source") == "remote" else ""),
        f"health   {'ok' if h['status'] == 'ok' else 'DEGRADED'}",
    ]
    lines += [f"         - {p}" for p in h.get("problems", [])]
    link = f"connected to {u['server']}" if u["connected"] else "DISCONNECTED"
    if not u["connected"] and u.get("last_error"):
        link += f" ({u['last_error']})"
    lines.append(
        f"uplink   {link}; {u['published_total']} samples and alarms published, "
        f"last {format_ago(u['last_publish_ts'], now)}; backlog {u['backlog']}"
    )
    lines.append(f"link     {format_link_cost(u)}")
    buffer = (
        f"buffer   {b['samples']} held, {b['bytes'] / 1048576:.1f} MiB, "
        f"oldest {format_ago(b['oldest_ts'], now)}; evicted {b['evicted_total']}"
    )
    if b.get("dropped_total"):
        buffer += f", dropped {b['dropped_total']}"
    if b.get("writable") is False:
        buffer += f"; NOT WRITABLE ({b.get('last_error') or 'unknown error'})"
    lines.append(buffer)
    devices = [(s, d) for s in doc["sources"] for d in s["devices"]]
    lines.append(f"devices  {len(devices)}")
    width = max((len(d["name"]) for _, d in devices), default=0)
    src_width = max((len(s["name"]) for s, _ in devices), default=0)
    for s, d in devices:
        values = " ".join(f"{k}={format_value(v)}" for k, v in (d.get("last_values") or {}).items())
        line = (
            f"  {d['name']:<{width}}  {s['name']:<{src_width}}  {d['state']:<7}  "
            f"last ok {format_ago(d['last_ok_ts'], now):<9}  ok {d['reads_ok']} failed "
            f"{d['reads_failed']} parse {d['parse_errors']}"
        )
        if values:
            line += f"  {values}"
        if d["state"] != "ok" and d.get("last_error"):
            line += f"  ({d['last_error']})"
        lines.append(line)
    events = doc.get("events") or []
    lines.append(f"events   {len(events)} in the last 24h" + (", the last 10:" if events else ""))
    lines += [f"  {_when(e['ts'], now)}  {e['kind']:<17}  {e['message']}" for e in events[:10]]
    return "\n".join(_printable(line) for line in lines)


def _when(ts: int, now: int) -> str:
    """``14:05:09`` and how long ago, so a technician matches it with the journal."""
    clock = time.strftime("%H:%M:%S", time.localtime(ts / 1000))
    return f"{clock} ({format_ago(ts, now)})".ljust(len("00:00:00 (23h 59m ago)"))


def _printable(text: str) -> str:
    """No terminal control characters from a device's error text or a label."""
    return "".join(c if c.isprintable() else "?" for c in text)
