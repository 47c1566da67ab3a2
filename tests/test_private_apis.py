"""The private library attributes street-gateway relies on still exist and behave as used.

Each is reached through one function (gateway/uplink/aiomqtt_private.py,
gateway/buffer/store.py ``on_connection_thread``); when a library release changes them, this
fails before the uplink, the audit or the buffer does. Every name of docs/architecture.md's
"Private APIs we reach into" has its check here.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import aiomqtt
import aiosqlite
import paho.mqtt.client as mqtt
import pytest
from aiomqtt import MqttError
from support import LOOPBACK, Mosquitto

from gateway.buffer.store import on_connection_thread
from gateway.uplink.aiomqtt_private import (
    bound_inbound_packets,
    client_loop,
    connack_future,
    disconnected_future,
    paho_client,
)


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


async def test_aiomqtt_exposes_its_disconnected_future_and_loop() -> None:
    client = aiomqtt.Client("127.0.0.1", 1)
    disconnected = disconnected_future(client)
    assert isinstance(disconnected, asyncio.Future) and not disconnected.done()
    assert client_loop(client) is asyncio.get_running_loop()  # where paho's socket is watched
    paho = paho_client(client)
    # aiomqtt's own hook, which register_writes_safely replaces, and the write it schedules
    assert callable(paho.on_socket_register_write)
    assert callable(paho.loop_write)


async def test_paho_reads_the_remaining_length_before_the_body(mosquitto: Mosquitto) -> None:
    """bound_inbound_packets reads paho's ``_in_packet`` from inside its ``_sock_recv``: a
    packet under the limit is delivered, one over it ends the connection unread."""
    refused: list[int] = []
    async with aiomqtt.Client(LOOPBACK, mosquitto.port) as client:
        bound_inbound_packets(client, 1000, refused.append)
        await client.subscribe("t/#", qos=1)
        async with aiomqtt.Client(LOOPBACK, mosquitto.port) as sender:
            await sender.publish("t/small", b"x" * 900, qos=1)
            await sender.publish("t/big", b"x" * 5000, qos=1)
        messages = aiter(client.messages)
        small = await anext(messages)
        assert (str(small.topic), len(small.payload)) == ("t/small", 900)  # type: ignore[arg-type]
        with pytest.raises(MqttError):
            async with asyncio.timeout(10):
                await anext(messages)
    assert len(refused) == 1 and 5000 < refused[0] < 5100  # the payload, topic and packet id


async def test_aiosqlite_runs_a_function_on_its_connection_thread(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "x.db") as db:

        def work(connection: sqlite3.Connection, value: int) -> tuple[int, str]:
            row = connection.execute("SELECT ?", (value,)).fetchone()
            return row[0], threading.current_thread().name

        result, thread = await on_connection_thread(db, work, 42)
    assert result == 42
    assert thread != threading.current_thread().name  # not the event loop's thread
