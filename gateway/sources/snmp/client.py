"""The SNMP adapter: GET and walk on one agent through pysnmp's asyncio API, its outcomes mapped
to the gateway's errors through one table (:data:`INDICATIONS`).

One :class:`SnmpClient` per source: its own engine and UDP socket, so one agent's silence or
bad answers never touch another source. pysnmp's own retries are off (``retries=0``): the
device core retries the poll, and its ``timeout`` bounds each try.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import (
    USM_AUTH_HMAC96_SHA,
    USM_AUTH_HMAC192_SHA256,
    USM_AUTH_HMAC384_SHA512,
    USM_PRIV_CFB128_AES,
    USM_PRIV_CFB256_AES_BLUMENTHAL,
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    bulk_walk_cmd,
    get_cmd,
)
from pysnmp.proto import errind

from gateway.errors import DeviceError, DeviceProtocolError, DeviceTimeout
from gateway.sources.snmp.config import SnmpSource, read_key

log = logging.getLogger(__name__)

AUTH = {"SHA": USM_AUTH_HMAC96_SHA, "SHA256": USM_AUTH_HMAC192_SHA256,
        "SHA512": USM_AUTH_HMAC384_SHA512}  # fmt: skip
# AES-256 as net-snmp (and the agents built on it) derive its key: Blumenthal's extension. With
# SHA256 or SHA512 auth the key needs no extension, and both variants agree.
PRIV = {"AES": USM_PRIV_CFB128_AES, "AES256": USM_PRIV_CFB256_AES_BLUMENTHAL}

# RFC 3416 error-status values, by number.
STATUS = ("noError", "tooBig", "noSuchName", "badValue", "readOnly", "genErr", "noAccess",
          "wrongType", "wrongLength", "wrongEncoding", "wrongValue", "noCreation",
          "inconsistentValue", "resourceUnavailable", "commitFailed", "undoFailed",
          "authorizationError", "notWritable", "inconsistentName")  # fmt: skip

# pysnmp's error indications -> the gateway's error and what it tells the operator; any other
# indication is a protocol error with pysnmp's words. A v2c agent that does not know the
# community says nothing at all: a timeout.
INDICATIONS: dict[type[errind.ErrorIndication], tuple[type[DeviceError], str]] = {
    errind.RequestTimedOut: (DeviceTimeout, "no answer (a wrong community gets none either)"),
    errind.UnknownUserName: (DeviceProtocolError, "the agent does not know this user"),
    errind.WrongDigest: (DeviceProtocolError, "the agent refused the auth key (wrong digest)"),
    errind.DecryptionError: (DeviceProtocolError, "the priv key does not decrypt the answer"),
    errind.UnsupportedSecurityLevel: (
        DeviceProtocolError,
        "the agent does not allow authPriv for this user",
    ),
    errind.NotInTimeWindow: (DeviceProtocolError, "the answer is outside the time window"),
    errind.UnknownEngineID: (DeviceProtocolError, "the agent's engine ID is unknown"),
}


class AgentRefused(DeviceProtocolError):
    """The agent answered with an error status (``tooBig``, ``noSuchName``, ``genErr``...);
    ``index`` is the 0-based position of the varbind it names, or None."""

    def __init__(self, status: int, index: int | None) -> None:
        self.status = status
        self.name = STATUS[status] if 0 <= status < len(STATUS) else f"error status {status}"
        self.index = index
        where = "" if index is None else f" (varbind {index + 1})"
        super().__init__(f"the agent answered {self.name}{where}")


@dataclass(frozen=True)
class Credentials:
    """A v2c community or a v3 user with its keys (authPriv): what a request is signed with."""

    version: str
    community: str = field(default="", repr=False)
    user: str = ""
    auth_protocol: str = "SHA"
    auth_key: str = field(default="", repr=False)
    priv_protocol: str = "AES"
    priv_key: str = field(default="", repr=False)

    @classmethod
    def of(cls, config: SnmpSource) -> Credentials:
        """The source's credentials, its key files read now; ValueError says why not."""
        if config.version == "2c":
            if config.community_file is None:
                raise ValueError("version 2c needs community_file")
            return cls("2c", community=read_key(config.community_file))
        if config.user is None or config.auth is None or config.priv is None:
            raise ValueError("version 3 needs user, auth and priv")
        return cls(
            "3",
            user=config.user,
            auth_protocol=config.auth.protocol,
            auth_key=read_key(config.auth.key_file),
            priv_protocol=config.priv.protocol,
            priv_key=read_key(config.priv.key_file),
        )

    def auth_data(self) -> CommunityData | UsmUserData:
        if self.version == "2c":
            return CommunityData(self.community, mpModel=1)
        return UsmUserData(
            self.user,
            self.auth_key,
            self.priv_key,
            authProtocol=AUTH[self.auth_protocol],
            privProtocol=PRIV[self.priv_protocol],
        )


class SnmpClient:
    """GETs and walks on one agent; :meth:`close` releases the socket."""

    def __init__(self, host: str, port: int, credentials: Credentials, timeout: float) -> None:
        self.host = host
        self.port = port
        self._auth = credentials.auth_data()
        self._timeout = timeout
        self._engine: SnmpEngine | None = None
        self._target: UdpTransportTarget | None = None
        self._context = ContextData()
        # Each OID's ObjectType, built once: pysnmp resolves one against its MIB view at every
        # request (~0.4 ms an OID), except one it has resolved before. As many as the points.
        self._objects: dict[str, ObjectType] = {}

    async def _ready(self) -> tuple[SnmpEngine, UdpTransportTarget]:
        if self._engine is None or self._target is None:
            try:  # resolves the host name: a name that does not resolve fails the poll
                target = await UdpTransportTarget.create(
                    (self.host, self.port), timeout=self._timeout, retries=0
                )
            except PySnmpError as exc:
                raise DeviceProtocolError(f"cannot reach {self.host}: {exc}") from None
            self._engine, self._target = SnmpEngine(), target
        return self._engine, self._target

    async def get(self, oids: Sequence[str]) -> list[tuple[str, Any]]:
        """One GET of ``oids``: the answer's (OID, value) pairs in order, or raise."""
        engine, target = await self._ready()
        try:
            indication, status, index, varbinds = await get_cmd(
                engine,
                self._auth,
                target,
                self._context,
                *(self._object(oid) for oid in oids),
                lookupMib=False,
            )
        except PySnmpError as exc:  # raised before sending: a local problem, e.g. no cipher
            raise DeviceProtocolError(f"SNMP: {exc}") from None
        if indication:
            raise mapped_error(indication)
        if int(status):
            position = int(index) - 1
            raise AgentRefused(int(status), position if 0 <= position < len(oids) else None)
        if len(varbinds) != len(oids):
            raise DeviceProtocolError(
                f"the agent answered {len(varbinds)} values to a GET of {len(oids)}"
            )
        return [(str(oid), value) for oid, value in varbinds]

    def _object(self, oid: str) -> ObjectType:
        found = self._objects.get(oid)
        if found is None:
            found = self._objects[oid] = ObjectType(ObjectIdentity(oid))
        return found

    async def walk(self, oid: str) -> AsyncIterator[tuple[str, Any]]:
        """The subtree under ``oid``, with GETBULK (v2c and v3), in the agent's order."""
        engine, target = await self._ready()
        walk = bulk_walk_cmd(
            engine,
            self._auth,
            target,
            self._context,
            0,
            25,
            ObjectType(ObjectIdentity(oid)),
            lexicographicMode=False,
            lookupMib=False,
        )
        async for indication, status, _index, varbinds in walk:
            if indication:
                raise mapped_error(indication)
            if status and int(status):
                raise AgentRefused(int(status), None)
            for name, value in varbinds:
                yield str(name), value

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close_dispatcher()
            self._engine = self._target = None


def mapped_error(indication: Any) -> DeviceError:
    """The gateway's error for one of pysnmp's error indications (:data:`INDICATIONS`)."""
    error, message = INDICATIONS.get(type(indication), (DeviceProtocolError, ""))
    return error(message or f"SNMP: {indication}")
