"""Command results are items like alarms: the leaf the gateway stores for a result is the leaf
a verifier computes from the message it receives on P/G/results, for writes and configs."""

from __future__ import annotations

import json

import pytest

from gateway.model import CommandResult
from gateway.seals.items import leaf_of, stored_leaf
from gateway.uplink.json_format import result_message

WRITE = CommandResult(
    id="c-17", by="ops-centre", op="write", device="barrier-1", point="closed", value=True,
    state="done", reason=None, read_back=True, detail="", ts_ms=1_764_169_200_123,
)  # fmt: skip
CONFIG = CommandResult(
    id="cfg-3", by="ops-centre", op="config", device=None, point=None, value=None,
    state="refused", reason="invalid_config", read_back=None, detail="2 problems",
    ts_ms=1_764_169_200_456, problems=("remote.yaml: gateway.id: required", "é ünïcode: 1.5e-07"),
)  # fmt: skip
ACTION = CommandResult(
    id=None, by="alarm:river-1/level>3.2", op="write", device="sign-1", point="limit", value=30.5,
    state="failed", reason="exception_2", read_back=None, detail="illegal data address",
    ts_ms=1_764_169_200_789,
)  # fmt: skip


@pytest.mark.parametrize("result", [WRITE, CONFIG, ACTION], ids=["write", "config", "action"])
def test_a_results_stored_leaf_is_what_a_verifier_computes_from_the_message(
    result: CommandResult,
) -> None:
    payload = json.loads(result_message("lamppost-0421", 42, result))
    assert payload["gateway"] == "lamppost-0421"
    assert leaf_of("result", payload) == stored_leaf(42, result)


def test_a_changed_result_does_not_verify() -> None:
    payload = json.loads(result_message("lamppost-0421", 42, WRITE))
    payload["state"] = "refused"
    assert leaf_of("result", payload) != stored_leaf(42, WRITE)
