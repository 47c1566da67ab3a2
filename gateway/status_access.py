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
from dataclasses import dataclass

from gateway.httpd import Request, Response

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
