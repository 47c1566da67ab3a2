"""The inbound guard on its own: a cap before any parsing, every exception a counted refusal,
the format's own refusals counted by their reason, and one log line per burst."""

from __future__ import annotations

import json
import logging

import pytest

from gateway.uplink.inbound import BURST_S, FAILED, TOO_LARGE, InboundGuard
from gateway.uplink.wire import Outgoing, Reconnect, Refused

ANSWER = [Outgoing("t/answer", b"ok", qos=0)]


def handler(topic: str, payload: bytes) -> list[Outgoing]:
    """A format's on_message: parses JSON (as Sparkplug's STATE does)."""
    doc = json.loads(payload)
    if doc == "bye":
        raise Reconnect("asked to", [])
    if not isinstance(doc, dict):
        raise Refused("malformed", "not an object")
    return ANSWER


def make(clock: list[float], max_bytes: int = 100) -> InboundGuard:
    return InboundGuard(handler, clock=lambda: clock[0], max_bytes=max_bytes)


def test_refusals_are_counted_by_reason_and_never_raised() -> None:
    guard = make([0.0], max_bytes=2000)
    bomb = b"[" * 1000  # json.loads raises RecursionError, which is not a ValueError
    with pytest.raises(RecursionError):
        json.loads(bomb)
    assert guard("t/a", b"{}") == ANSWER
    assert guard("t/a", b"{" + b" " * 2000 + b"}") == []  # over the cap: never parsed
    assert guard("t/a", b"[1]") == []  # the format refused it
    assert guard("t/a", bomb) == []
    assert guard.refused == {TOO_LARGE: 1, "malformed": 1, FAILED: 1}
    with pytest.raises(Reconnect):  # a request, not a failure: it goes through
        guard("t/a", b'"bye"')


def test_one_log_line_per_burst(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.uplink.inbound")
    clock = [0.0]
    guard = make(clock)
    for _ in range(1000):
        clock[0] += 0.01
        guard("t/a", b"[1]")
    assert len(caplog.records) == 1  # the burst's first refusal, with its detail
    assert "refused (malformed): not an object" in caplog.records[0].getMessage()
    clock[0] += 0.01 + BURST_S  # a burst that lasts gets one line per BURST_S with its count
    guard("t/a", b"[1]")
    assert len(caplog.records) == 3
    assert "999 more inbound messages refused" in caplog.records[1].getMessage()
    assert guard.refused["malformed"] == 1001


def test_one_topic_may_have_a_larger_cap_and_every_other_keeps_its_own() -> None:
    guard = InboundGuard(handler, clock=lambda: 0.0, max_bytes=100, larger={"p/g/commands": 1000})
    big = b"{" + b" " * 500 + b"}"
    assert guard("p/g/commands", big) == ANSWER  # a config command's room
    assert guard("p/g/other", big) == []
    assert guard("p/g/commands", b"{" + b" " * 1000 + b"}") == []
    assert guard.refused == {TOO_LARGE: 2}
    assert guard.largest == 1000  # what the socket reader lets through at most
