"""The only place that reaches into aiomqtt's private attributes (docs/architecture.md,
"Private APIs"). aiomqtt 2.5 has no public way to set paho's TCP connect timeout, to learn of
a disconnect before CONNACK, or to acknowledge messages by hand (paho's manual ack, which the
audit needs to ack a batch only once it is committed). aiomqtt is pinned to 2.5.x in
pyproject.toml, and tests/test_private_apis.py fails if these attributes change.
"""

from __future__ import annotations

import asyncio

import aiomqtt
import paho.mqtt.client as mqtt


def paho_client(client: aiomqtt.Client) -> mqtt.Client:
    """The paho client aiomqtt drives: for ``connect_timeout``, ``on_disconnect``,
    ``manual_ack_set``, ``ack`` and ``on_message``, which are public on paho's side."""
    paho: mqtt.Client = client._client
    return paho


def connack_future(client: aiomqtt.Client) -> asyncio.Future[None]:
    """The future aiomqtt's ``__aenter__`` awaits until CONNACK (to fail it early)."""
    connected: asyncio.Future[None] = client._connected
    return connected


def disconnected_future(client: aiomqtt.Client) -> asyncio.Future[None]:
    """The future aiomqtt fails when the connection breaks (its reader and writer set it)."""
    disconnected: asyncio.Future[None] = client._disconnected
    return disconnected


def client_loop(client: aiomqtt.Client) -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop = client._loop
    return loop
