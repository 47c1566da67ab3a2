"""The error tree of street-gateway.

Library exceptions (pymodbus, aiomqtt, sqlite3, serial) are mapped to these at the adapter
boundary with ``raise ... from exc``, so callers only ever catch our own types::

    GatewayError
    ├── ConfigError          a user mistake in the YAML; carries one line per problem
    ├── BufferStoreError     the durable buffer
    │   ├── BufferWriteError     disk full, read-only file system, I/O error
    │   ├── BufferCorruptError   the database file is not ours or is damaged
    │   ├── BufferNewerError     written by a newer street-gateway: refused, left untouched
    │   └── BufferUnsafeError    a directory others can write, a symbolic link where a state
    │                            file goes: refused at start
    ├── DeviceError          a sensor did not give a usable answer
    │   ├── DeviceTimeout        no answer within the transaction timeout
    │   ├── DeviceProtocolError  exception response, CRC error, unexpected frame
    │   └── ParseError           a serial line that does not parse
    └── UplinkError          the MQTT link (refused, auth, TLS, lost)
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error street-gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid; ``problems`` holds one printable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class BufferStoreError(GatewayError):
    """The durable buffer could not do what was asked."""


class BufferWriteError(BufferStoreError):
    """A write to the buffer failed (disk full, read-only file system, I/O error)."""


class BufferCorruptError(BufferStoreError):
    """The buffer file is damaged or is not a street-gateway buffer."""


class BufferNewerError(BufferStoreError):
    """The buffer file was written by a newer street-gateway (a higher schema version): this
    one refuses to start rather than move a backlog it cannot read aside."""


class BufferUnsafeError(BufferStoreError):
    """Someone else could make the daemon write where it should not (a buffer directory others
    can write, a symbolic link planted where a state file goes): refused at start."""


class DeviceError(GatewayError):
    """A sensor did not give a usable answer."""


class DeviceTimeout(DeviceError):
    """No answer within the transaction timeout."""


class DeviceProtocolError(DeviceError):
    """An exception response, a CRC error, or a frame we did not expect."""


class ParseError(DeviceError):
    """A serial line that does not parse into the configured points."""


class UplinkError(GatewayError):
    """The MQTT link failed: refused, bad credentials, TLS, or lost."""
