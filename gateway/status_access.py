"""Who the status endpoint answers: the token, and without one, the Host names. Pure.

When a token is configured, every path but ``/health`` wants ``Authorization: Bearer <token>``
(compared in constant time); a missing or wrong one gets 401. The page ``/`` (and only it) also
accepts ``?token=<token>`` (a browser cannot add a header to a plain navigation).

Without a token (a loopback listener: config refuses a tokenless LAN one) a request is answered
only under the gateway's own names, so a page elsewhere whose name an attacker rebinds to
127.0.0.1 cannot read the status from a technician's browser (421).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.httpd import Handler, HttpStats, Request, Response

_OPEN_PATHS = frozenset({"/health"})
_QUERY_TOKEN_PATHS = frozenset({"/"})
_JSON = "application/json; charset=utf-8"


def json_response(
    doc: object, status: int = 200, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    body = json.dumps(doc, allow_nan=False).encode()
    return Response(status, body, _JSON, headers)


@dataclass(slots=True)
class Access:
    """Who is answered: the token (None: none is asked) and, without a token, the Host names a
    loopback listener answers to (a page on another site whose name was rebound to 127.0.0.1
    sends its own name as Host, and is refused)."""

    token: bytes | None
    hosts: frozenset[str]

    @classmethod
    def of(cls, token: str | None, listen_host: str) -> Access:
        names = {"localhost", "127.0.0.1", "::1", listen_host.strip("[]").lower()}
        return cls(token.encode() if token else None, frozenset(names))


def host_name(header: str) -> str:
    """A Host header's name without its port: ``gw:8470`` -> ``gw``, ``[::1]:80`` -> ``::1``."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def refusal(request: Request, access: Access) -> Response | None:
    """421 for a tokenless listener asked under a name that is not its own; 401 unless the
    request carries the token (a bearer token; on the page also ``?token=``); /health is open
    to monitoring. None: let it through."""
    expected = access.token
    if expected is None:
        host = request.headers.get("host")  # no Host at all: HTTP/1.0, never a browser
        if host is None or host_name(host) in access.hosts:
            return None
        return json_response({"error": f"this gateway is not {host[:80]!r}"}, 421)
    if request.path in _OPEN_PATHS:
        return None
    given = ""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        given = value.strip()
    elif request.path in _QUERY_TOKEN_PATHS:
        given = request.query.get("token", "")
    if given and hmac.compare_digest(given.encode(), expected):
        return None
    return json_response(
        {"error": "a bearer token is required" if not given else "wrong token"},
        401,
        (("WWW-Authenticate", 'Bearer realm="street-gateway"'),),
    )


SAFE_HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))


def guarded(
    routes: Mapping[str, Callable[[Request], Response]], access: Access, http: HttpStats | None
) -> Handler:
    """A handler answering ``routes`` behind :func:`refusal` (refusals counted in ``http``);
    ``access`` is read at each request (a reload may change its token). The status endpoint's
    and the audit's fleet view's."""

    async def handle(request: Request) -> Response:
        route = routes.get(request.path)
        # an unknown path is a 404 before any token is asked, as ever; the Host check is first
        response = refusal(request, access) if route or access.token is None else None
        if response is not None:
            if http is not None:
                http.refuse("host" if response.status == 421 else "token", request.peer)
        elif route is None:
            response = json_response({"error": f"no such path: {request.path[:80]}"}, 404)
        else:
            response = route(request)
        return Response(
            response.status,
            response.body,
            response.content_type,
            (*response.headers, *SAFE_HEADERS),
        )

    return handle
