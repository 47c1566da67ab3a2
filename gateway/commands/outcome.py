"""How one write ended: the state, reason and read-back a result carries. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.model import Value

State = Literal["done", "refused", "failed"]
# SPEC "Commands, writes and actions": the words a result's reason may be
REFUSALS = (
    "bad_signature", "unknown_key", "expired", "future", "replayed", "clock_unsynced",
    "not_writable", "out_of_range", "not_allowed", "rate_limited", "bad_request",
)  # fmt: skip
FAILURES = ("timeout", "device_down", "readback_mismatch")  # and exception_<code>
# a config command's (SPEC "Fleet operations"): refused invalid_config or local_only, failed
# rolled_back
CONFIG_REASONS = ("invalid_config", "local_only", "rolled_back")


@dataclass(frozen=True, slots=True)
class Outcome:
    state: State
    reason: str | None = None
    read_back: Value | None = None
    detail: str = ""
    problems: tuple[str, ...] | None = None  # a config command's check lines

    @classmethod
    def refused(cls, reason: str, detail: str) -> Outcome:
        return cls("refused", reason, None, detail)

    @classmethod
    def failed(cls, reason: str, detail: str, read_back: Value | None = None) -> Outcome:
        return cls("failed", reason, read_back, detail)
