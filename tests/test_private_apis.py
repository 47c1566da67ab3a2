"""The private library attributes street-gateway relies on still exist and behave as used.

Each is reached through one function (gateway/uplink/aiomqtt_private.py,
gateway/buffer/store.py ``on_connection_thread``); when a library release changes them, this
fails before the uplink, the audit or the buffer does (docs/architecture.md, "Private APIs").
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import aiomqtt
import aiosqlite
import paho.mqtt.client as mqtt

from gateway.buffer.store import on_connection_thread
from gateway.uplink.aiomqtt_private import connack_future, paho_client


async def test_aiomqtt_exposes_its_paho_client_and_connack_future() -> None:
    client = aiomqtt.Client("127.0.0.1", 1)
    paho = paho_client(client)
    assert isinstance(paho, mqtt.Client)
    paho.connect_timeout = 0.5  # a public paho property, set before connecting
    assert paho.connect_timeout == 0.5
    assert callable(paho.on_disconnect)  # aiomqtt's own hook, which ours wraps
    paho.manual_ack_set(True)
    assert callable(paho.ack)
    connected = connack_future(client)
    assert isinstance(connected, asyncio.Future) and not connected.done()


async def test_aiosqlite_runs_a_function_on_its_connection_thread(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "x.db") as db:

        def work(connection: sqlite3.Connection, value: int) -> tuple[int, str]:
            row = connection.execute("SELECT ?", (value,)).fetchone()
            return row[0], threading.current_thread().name

        result, thread = await on_connection_thread(db, work, 42)
    assert result == 42
    assert thread != threading.current_thread().name  # not the event loop's thread
