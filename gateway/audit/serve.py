"""``audit --serve HOST:PORT``: the fleet view over HTTP, with the status endpoint's defaults.

Served by :mod:`gateway.httpd` (bounded connections, deadlines, a rate per address) and guarded
by :mod:`gateway.status_access`: without ``--token-file`` only a loopback address is accepted
and only under its own names (a rebound DNS name gets 421); with a token, every path but
``/health`` wants ``Authorization: Bearer`` (the page also ``?token=``).

| path | answer |
| --- | --- |
| ``/`` | the page (docs/fleet.md) |
| ``/fleet.json`` | its rows as JSON, in the page's order |
| ``/metrics`` | ``street_gateway_fleet_...{gateway="..."}`` |
| ``/health`` | 200 ``{"status": "ok"}`` while the audit runs |
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.audit.fleet_view import CSP, families, render_page, row_doc, rows
from gateway.audit.health import HealthBoard
from gateway.audit.ledger import Fleet
from gateway.httpd import Handler, HttpServer, HttpStats, Request, Response
from gateway.prometheus import CONTENT_TYPE_LATEST, generate_latest
from gateway.status_access import Access, guarded, json_response


def fleet_handler(
    fleet: Fleet,
    board: HealthBoard,
    access: Access,
    *,
    grace_s: float,
    http: HttpStats | None = None,
    clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
) -> Handler:
    def page(request: Request) -> Response:
        now = clock_ms()
        table = rows(fleet, board, now, grace_s)
        text = render_page(
            table, now, prefix=fleet.prefix, rejected=fleet.rejected + board.rejected
        )
        headers = (("Content-Security-Policy", CSP), ("Referrer-Policy", "no-referrer"))
        return Response(200, text.encode(), "text/html; charset=utf-8", headers)

    def as_json(request: Request) -> Response:
        now = clock_ms()
        return json_response(
            {"ts": now, "gateways": [row_doc(r) for r in rows(fleet, board, now, grace_s)]}
        )

    def metrics(request: Request) -> Response:
        table = rows(fleet, board, clock_ms(), grace_s)
        return Response(200, generate_latest(families(fleet, board, table)), CONTENT_TYPE_LATEST)

    def health(request: Request) -> Response:
        return json_response({"status": "ok"})

    routes = {"/": page, "/fleet.json": as_json, "/metrics": metrics, "/health": health}

    return guarded(routes, access, http)


def fleet_server(
    fleet: Fleet, board: HealthBoard, *, host: str, port: int, token: str | None, grace_s: float
) -> HttpServer:
    """The server (enter it with ``async with``; ``.port`` is then the bound port)."""
    stats = HttpStats()
    handler = fleet_handler(fleet, board, Access.of(token, host), grace_s=grace_s, http=stats)
    return HttpServer(handler, host=host, port=port, stats=stats)
