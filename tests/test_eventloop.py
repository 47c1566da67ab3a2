"""Which event loop the daemon runs on (gateway/eventloop.py); both are driven end to end by
tests/e2e/test_e2e_pipeline.py."""

from __future__ import annotations

import asyncio

import pytest

from gateway import eventloop
from gateway.errors import GatewayError


def _run_on(choice: eventloop.LoopChoice) -> str:
    with asyncio.Runner(loop_factory=choice.factory) as runner:
        return runner.run(_name())


async def _name() -> str:
    return eventloop.name_of(asyncio.get_running_loop())


def test_uvloop_is_the_default_where_it_is_installed() -> None:
    pytest.importorskip("uvloop", reason="uvloop has no wheel for this machine")
    choice = eventloop.choose({})
    assert choice.why is None
    assert _run_on(choice).startswith("uvloop 0.")


def test_the_environment_can_choose_asyncios_own_loop() -> None:
    choice = eventloop.choose({eventloop.ENV: "asyncio"})
    assert choice.why == "STREET_GATEWAY_EVENT_LOOP=asyncio"
    assert _run_on(choice) == "asyncio"


def test_an_unknown_loop_is_refused_with_its_name() -> None:
    with pytest.raises(GatewayError, match="'trio': expected uvloop or asyncio"):
        eventloop.choose({eventloop.ENV: "trio"})
