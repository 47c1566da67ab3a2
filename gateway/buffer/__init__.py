"""The durable store-and-forward buffer (SQLite, WAL): see :mod:`gateway.buffer.core`."""

from gateway.buffer.core import Buffer

__all__ = ["Buffer"]
