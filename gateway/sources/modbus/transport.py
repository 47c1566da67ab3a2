"""The seam between the Modbus source and the wire: a transport, and the table of its errors.

A transport (``MbapClient`` for Modbus TCP, ``RtuTcpClient`` for RTU frames over TCP,
``SerialRtuClient`` for RS-485) moves the bytes of one read at a time. Its ``read`` returns the
registers or bits, raises :class:`~gateway.codec.mbap.ExceptionAnswer` when the device answered
an exception code (an answer, not a failure of the link), and otherwise raises only exceptions
listed in its ``errors`` table, which :func:`map_errors` turns into our own error tree
(``DeviceTimeout``, ``DeviceError``, ``DeviceProtocolError``): one table per transport, like
httpx's ``HTTPCORE_EXC_MAP``, and a test that checks every exception is in it. So the source
never asks which transport it has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Protocol

from gateway.errors import DeviceError, DeviceProtocolError, DeviceTimeout

# exception class -> (our error class, message template with {exc} and {timeout})
ErrorMap = Mapping[type[BaseException], tuple[type[DeviceError], str]]

TIMEOUT = (DeviceTimeout, "no answer within {timeout:g}s")
CONNECTION = (DeviceError, "connection lost: {exc}")
PROTOCOL = (DeviceProtocolError, "{exc}")


class Transport(Protocol):
    @property
    def errors(self) -> ErrorMap: ...

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> bool: ...

    def close(self) -> None: ...

    async def read(
        self, table: str, address: int, count: int, unit: int
    ) -> list[int] | list[bool]: ...


@contextlib.contextmanager
def map_errors(errors: ErrorMap, timeout_s: float) -> Iterator[None]:
    """Re-raise an exception of the table as our error, ``from`` the original; the most
    specific class in the table wins (TimeoutError before OSError). Others pass unchanged."""
    try:
        yield
    except Exception as exc:
        mapped = mapped_error(errors, exc, timeout_s)
        if mapped is None:
            raise
        raise mapped from exc


def mapped_error(errors: ErrorMap, exc: Exception, timeout_s: float) -> DeviceError | None:
    """``exc`` as our error when the table lists its class (see :func:`map_errors`)."""
    target = lookup(errors, type(exc))
    if target is None:
        return None
    kind, template = target
    return kind(template.format(exc=exc, timeout=timeout_s))


def lookup(errors: ErrorMap, kind: type[BaseException]) -> tuple[type[DeviceError], str] | None:
    for base in kind.__mro__:
        if base in errors:
            return errors[base]
    return None
