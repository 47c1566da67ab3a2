"""What ``/status`` says of the identity and the seals (no private key, ever). Pure."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.keys import ALG, PublicKey


class _Figures(Protocol):
    made_total: int
    last_n: int
    last_ts: int | None
    unsealed_seqs_total: int
    sealed_to: int


class _Seals(Protocol):
    @property
    def figures(self) -> _Figures: ...


class _Sealing(Protocol):
    @property
    def seals(self) -> _Seals: ...


def identity_json(public: PublicKey) -> dict[str, str]:
    """``{"alg", "public_key", "fingerprint"}``, as ``meta`` and ``/status`` carry it."""
    return {"alg": ALG, "public_key": public.base64, "fingerprint": public.fingerprint}


def identity_status(public: PublicKey | None, buffer: _Sealing | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if public is not None:
        out["identity"] = identity_json(public)
    if buffer is not None:
        f = buffer.seals.figures
        out["seals"] = {
            "made_total": f.made_total,
            "last_n": f.last_n,
            "last_ts": f.last_ts,
            "sealed_to_seq": f.sealed_to,
            "unsealed_seqs_total": f.unsealed_seqs_total,
        }
    return out
