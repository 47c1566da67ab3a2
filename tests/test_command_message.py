"""The pure stages of a command: parse, authenticate (Ed25519 over RFC 8785 bytes), time, and
authorize (writable, allowed, range, rate); each refusal with its reason word."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.commands.authorize import RateLimiter, authorize
from gateway.commands.message import Refusal, authenticate, check_time, parse, sign, signed_bytes
from gateway.config import PointSpec
from gateway.config.writes import Rate, WriteConfig
from gateway.keys import PublicKey, SigningKey

KEY = SigningKey(bytes(range(32)))  # a test key: seed 00 01 02 ... 1f
KEYS: dict[str, PublicKey] = {"ops-centre": KEY.public}
NOW = 1_796_663_948_160
DOC = {"id": "c-1", "ts": NOW, "op": "write", "device": "barrier-1", "point": "closed",
       "value": True, "by": "ops-centre"}  # fmt: skip


def payload(doc: dict[str, object]) -> bytes:
    return json.dumps(doc).encode()


def reason(call: object) -> str | None:
    try:
        call()  # type: ignore[operator]
    except Refusal as refusal:
        return refusal.outcome.reason
    return None


def test_the_signed_bytes_are_rfc8785_without_sig() -> None:
    signed = sign(DOC, KEY.sign)
    assert signed_bytes(signed) == (
        b'{"by":"ops-centre","device":"barrier-1","id":"c-1","op":"write","point":"closed",'
        b'"ts":1796663948160,"value":true}'
    )
    assert KEY.public.verifies(signed_bytes(signed), base64.b64decode(str(signed["sig"])))


def test_a_good_command_passes_every_stage() -> None:
    command, doc = parse(payload(sign(DOC, KEY.sign)))
    assert (command.id, command.device, command.point, command.value) == (
        "c-1", "barrier-1", "closed", True,
    )  # fmt: skip
    authenticate(command, doc, KEYS, required=True)
    check_time(command, NOW + 1000, 120.0, clock_synced=True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\xff garbage", "bad_request"),
        (b"[]", "bad_request"),
        (payload({**DOC, "id": "no spaces allowed"}), "bad_request"),
        (payload({**DOC, "ts": "yesterday"}), "bad_request"),
        (payload({**DOC, "op": "reboot"}), "bad_request"),
        (payload({**DOC, "point": "#"}), "bad_request"),
        (payload({**DOC, "device": "a/b"}), "bad_request"),
        (payload({k: v for k, v in DOC.items() if k != "value"}), "bad_request"),
        (payload({**DOC, "value": [1]}), "bad_request"),
        (
            b'{"id": "c-1", "ts": 1, "op": "write", "device": "d", "point": "p", "value": NaN,'
            b' "by": "x"}',
            "bad_request",
        ),
        (payload({**DOC, "extra": 1}), "bad_request"),
    ],
)
def test_what_parse_refuses(raw: bytes, expected: str) -> None:
    assert reason(lambda: parse(raw)) == expected


def test_authentication_refusals() -> None:
    forged = {**sign(DOC, KEY.sign), "value": False}
    command, doc = parse(payload(forged))
    assert reason(lambda: authenticate(command, doc, KEYS, required=True)) == "bad_signature"
    assert reason(lambda: authenticate(command, doc, KEYS, required=False)) is None
    stranger = sign({**DOC, "by": "stranger"}, SigningKey.generate().sign)
    command, doc = parse(payload(stranger))
    assert reason(lambda: authenticate(command, doc, KEYS, required=True)) == "unknown_key"
    for bad_sig in ("", "not base64!", base64.b64encode(b"short").decode()):
        command, doc = parse(payload({**DOC, "sig": bad_sig}))
        assert reason(lambda: authenticate(command, doc, KEYS, required=True)) == "bad_signature"  # noqa: B023


def test_time_refusals() -> None:
    command, _ = parse(payload(DOC))
    assert reason(lambda: check_time(command, NOW, 120.0, clock_synced=False)) == "clock_unsynced"
    assert reason(lambda: check_time(command, NOW + 121_000, 120.0, True)) == "expired"
    assert reason(lambda: check_time(command, NOW - 31_000, 120.0, True)) == "future"
    assert reason(lambda: check_time(command, NOW - 29_000, 120.0, True)) is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_are_parsed_or_refused_never_raised(raw: bytes) -> None:
    try:
        parse(raw)
    except Refusal as refusal:
        assert refusal.outcome.reason == "bad_request"


SPEED = PointSpec("speed", "uint16", write=WriteConfig(min=20, max=90))
MODE = PointSpec("mode", "uint16", write=WriteConfig(values=[1, 2, 3]))
POINTS = {"sign-1": {"speed": SPEED, "mode": MODE, "ro": PointSpec("ro", "uint16"),
                     "on": PointSpec("on", "bool", write=WriteConfig())}}  # fmt: skip


@pytest.mark.parametrize(
    ("point", "value", "expected"),
    [
        ("speed", 50, None),
        ("speed", 19, "out_of_range"),
        ("speed", 90.5, "out_of_range"),
        ("mode", 2, None),
        ("mode", 4, "not_allowed"),
        ("mode", True, "bad_request"),
        ("ro", 1, "not_writable"),
        ("gone", 1, "not_writable"),
        ("on", True, None),
        ("on", 1, "bad_request"),
        ("speed", "50", "bad_request"),
    ],
)
def test_authorize(point: str, value: object, expected: str | None) -> None:
    refusal = authorize(POINTS, "sign-1", point, value)
    assert (refusal.reason if refusal else None) == expected


def test_the_rate_window_slides() -> None:
    limiter, rate = RateLimiter(), Rate(2, 10.0)
    assert limiter.check("p", rate, 0.0) is None
    assert limiter.check("p", rate, 1.0) is None
    refused = limiter.check("p", rate, 5.0)
    assert refused is not None and refused.reason == "rate_limited"
    assert "the next in 5.0s" in refused.detail
    assert limiter.check("q", rate, 5.0) is None  # per point
    assert limiter.check("p", rate, 10.5) is None  # the first write left the window
    assert limiter.check("p", None, 10.6) is None  # no rate: no limit
    assert limiter.check("p", rate, 10.7) is not None  # 1.0 and 10.5 are in the window
    assert limiter.check("p", rate, 10.8, exempt=True) is None  # an action: counted, not refused
    assert limiter.check("p", rate, 11.6) is not None  # 10.5 and 10.8 fill the window


CONFIG = {"id": "cfg-1", "ts": NOW, "op": "config", "yaml": "gateway: {id: g}\n# é\n",
          "by": "ops-centre"}  # fmt: skip


def test_a_config_command_carries_its_text_and_its_signature_covers_it() -> None:
    signed = sign(CONFIG, KEY.sign)
    command, doc = parse(payload(signed))
    assert (command.op, command.yaml, command.device) == (
        "config", "gateway: {id: g}\n# é\n".encode(), None,
    )  # fmt: skip
    authenticate(command, doc, KEYS, required=True)
    tampered = {**signed, "yaml": "gateway: {id: other}\n"}
    command, doc = parse(payload(tampered))
    assert reason(lambda: authenticate(command, doc, KEYS, required=True)) == "bad_signature"


@pytest.mark.parametrize(
    "doc",
    [
        {**CONFIG, "yaml": 42},  # not text
        {**CONFIG, "device": "barrier-1"},  # a write's key on a config
        {k: v for k, v in CONFIG.items() if k != "yaml"},
        {**DOC, "yaml": "x: 1"},  # a config's key on a write
    ],
)
def test_a_config_command_of_the_wrong_shape_is_a_bad_request(doc: dict[str, object]) -> None:
    assert reason(lambda: parse(payload(doc))) == "bad_request"


def test_a_lone_surrogate_in_the_text_is_a_bad_request() -> None:
    raw = payload(CONFIG).replace(b"\\u00e9", b"\\ud800")
    assert b"\\ud800" in raw
    assert reason(lambda: parse(raw)) == "bad_request"
