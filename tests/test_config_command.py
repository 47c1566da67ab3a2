"""The config command in the channel on its own (the end-to-end path is in
tests/e2e/test_e2e_remote_config.py): its text handed to the remote-config engine, the engine's
outcome as the one result with ``problems``, a redelivery answered with that result, a config
always signed, and a trial cut by a stop owed its result at the next start."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import yaml
from support import LOOPBACK, free_port

from gateway.buffer.codec import result_body, result_from_body
from gateway.commands.channel import Commands
from gateway.commands.message import sign
from gateway.config import load_config
from gateway.fleet.remote import RemoteResult
from gateway.keys import SigningKey
from gateway.model import CommandResult
from gateway.sources.registry import installed
from gateway.uplink.json_format import result_message

OPERATOR = SigningKey.generate()
PROBLEM = "remote.yaml: sources[0].devices[0].unit: 999 is over 247"


class Results:
    """The buffer's ``put`` as the channel sees it: results numbered in order."""

    def __init__(self) -> None:
        self.items: list[CommandResult] = []

    def put(self, item: CommandResult) -> int | None:
        self.items.append(item)
        return len(self.items)


def config(tmp_path: Path, **commands: Any) -> Any:
    key = tmp_path / "ops-centre.pub"
    key.write_text(OPERATOR.public.pem())
    data = {
        "gateway": {"id": "g"},
        "buffer": {"path": str(tmp_path / "buffer.db")},
        "uplink": {"servers": [f"mqtt://{LOOPBACK}:{free_port()}"]},
        "commands": {"trusted_keys": [{"name": "ops-centre", "public_key_file": str(key)}],
                     **commands},
        "sources": [{"name": "m", "kind": "modbus-tcp", "host": LOOPBACK, "port": free_port(),
                     "devices": [{"name": "d", "unit": 1, "interval": "1s", "points": [
                         {"name": "p", "table": "holding", "address": 0, "type": "uint16"}]}]}],
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, installed()).config


def config_command(text: str, cid: str = "cfg-1", key: SigningKey = OPERATOR) -> bytes:
    doc = {"id": cid, "ts": int(time.time() * 1000), "op": "config", "yaml": text,
           "by": "ops-centre"}  # fmt: skip
    return json.dumps(sign(doc, key.sign)).encode()


async def test_the_engines_outcome_is_the_one_result_and_a_redelivery_gets_it_again(
    tmp_path: Path,
) -> None:
    applied: list[tuple[bytes, str]] = []

    async def apply(text: bytes, trial: str) -> RemoteResult:
        applied.append((text, trial))
        return RemoteResult("refused", "invalid_config", [PROBLEM])

    buffer = Results()
    commands = Commands(config(tmp_path), buffer, targets=dict, clock_synced=lambda: True,
                        remote=apply)  # fmt: skip
    message = config_command("gateway: {id: g}\n")
    async with asyncio.TaskGroup() as group:
        task = group.create_task(commands.run())
        assert commands.receive(message) == []
        while not buffer.items:
            await asyncio.sleep(0.01)
        assert commands.receive(message) == [(1, buffer.items[0])]  # the same bytes again
        task.cancel()
    assert applied == [(b"gateway: {id: g}\n", "cfg-1")]  # applied once
    (result,) = buffer.items
    doc = json.loads(result_message("g", 1, result))
    assert (doc["op"], doc["state"], doc["reason"], doc["problems"]) == (
        "config", "refused", "invalid_config", [PROBLEM],
    )  # fmt: skip
    assert "device" not in doc and "value" not in doc
    assert result_from_body(result.ts_ms, result_body(result)) == result  # kept, read back


async def test_a_config_is_always_signed_and_a_cut_trial_gets_its_result(tmp_path: Path) -> None:
    async def apply(text: bytes, trial: str) -> RemoteResult:
        raise AssertionError("an unsigned config must not be applied")

    buffer = Results()
    commands = Commands(config(tmp_path, require_signature=False), buffer, targets=dict,
                        clock_synced=lambda: True, remote=apply)  # fmt: skip
    assert commands.receive(config_command("x: 1\n", key=SigningKey.generate())) == []
    (refused,) = buffer.items
    assert (refused.op, refused.state, refused.reason, refused.problems) == (
        "config", "refused", "bad_signature", (),
    )  # fmt: skip
    commands.interrupted_config("cfg-7", "the gateway stopped before it was confirmed")
    commands.interrupted_config("local-1796663948160", "a drop file's: its result is a file")
    assert [(r.id, r.op, r.state, r.reason) for r in buffer.items[1:]] == [
        ("cfg-7", "config", "failed", "rolled_back"),
    ]
