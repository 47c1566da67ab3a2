"""Network addresses as the config writes them: a broker's URL, the status endpoint's HOST:PORT.

Pure parsers, shared by the config's checks, the uplink, the status client and ``audit``; a
bad address is a ValueError whose message names it.
"""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from gateway.quoting import quote

DEFAULT_STATUS_PORT = 8470


def parse_server(url: str) -> tuple[Literal["mqtt", "mqtts"], str, int]:
    """``mqtts://host:8883`` -> ("mqtts", "host", 8883); the port defaults by scheme."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"{quote(url)}: the scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"{quote(url)}: no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{quote(url)}: the port is not a number from 1 to 65535") from None
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError(
            f"{quote(url)}: only scheme://host:port; credentials go in username/password_file"
        )
    scheme: Literal["mqtt", "mqtts"] = "mqtts" if parts.scheme == "mqtts" else "mqtt"
    return scheme, parts.hostname, port or (8883 if scheme == "mqtts" else 1883)


def split_listen(listen: str) -> tuple[str, int]:
    """``127.0.0.1:8470`` / ``[::1]:8470`` -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{quote(listen)} is not HOST:PORT, like 127.0.0.1:{DEFAULT_STATUS_PORT}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
