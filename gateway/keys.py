"""Ed25519 keys: the gateway's identity (seals) and the operators' keys (commands).

Signing and verifying are libsodium's, through PyNaCl. It was chosen over ``cryptography`` by
measured memory, since every box signs: in a process that has already imported ``ssl``, PyNaCl
adds 1.2 MB of RSS to sign and verify once, ``cryptography`` 11.2 MB (docs/performance.md).

The files are the standard PEM forms, so ``openssl`` reads and writes them: a private key is
PKCS#8 (``openssl genpkey -algorithm ed25519``), a public key SPKI (``openssl pkey -pubout``).
For Ed25519 both are a fixed DER prefix before the 32 raw bytes (RFC 8410 §7, §10.3), so they are
read by comparing that prefix exactly; anything else is refused with a line saying what was
expected, never guessed at. No I/O here: :mod:`gateway.identity` reads and creates the files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from gateway.errors import GatewayError

ALG = "Ed25519"
# RFC 8410: SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }
PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
# RFC 8410: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits, 32 bytes) }
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
PRIVATE_LABEL = "PRIVATE KEY"
PUBLIC_LABEL = "PUBLIC KEY"
SIGNATURE_BYTES = 64
MAX_PEM_BYTES = 4096  # an Ed25519 PEM is ~120 bytes; a bigger file is not one


class KeyFormatError(GatewayError):
    """A key file that is not an Ed25519 key in the expected PEM form."""


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key: 32 raw bytes."""

    raw: bytes

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the raw bytes: what a city records at commissioning."""
        return "sha256:" + hashlib.sha256(self.raw).hexdigest()

    @property
    def base64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def pem(self) -> str:
        return _pem(PUBLIC_LABEL, SPKI_PREFIX + self.raw)

    def verifies(self, message: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's over exactly ``message``."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            nacl.signing.VerifyKey(self.raw).verify(message, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True

    @classmethod
    def from_pem(cls, text: bytes | str) -> PublicKey:
        return cls(_unwrap(text, PUBLIC_LABEL, SPKI_PREFIX, "an Ed25519 public key (SPKI PEM)"))


class SigningKey:
    """An Ed25519 private key. Its bytes leave only through :meth:`pem`, for the key file."""

    def __init__(self, seed: bytes) -> None:
        self._key = nacl.signing.SigningKey(seed)
        self.public = PublicKey(bytes(self._key.verify_key))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def from_pem(cls, text: bytes | str) -> SigningKey:
        return cls(
            _unwrap(text, PRIVATE_LABEL, PKCS8_PREFIX, "an Ed25519 private key (PKCS#8 PEM)")
        )

    def sign(self, message: bytes) -> bytes:
        """The 64-byte signature of ``message`` (deterministic, RFC 8032)."""
        return self._key.sign(message).signature

    def pem(self) -> str:
        return _pem(PRIVATE_LABEL, PKCS8_PREFIX + bytes(self._key))

    def __repr__(self) -> str:  # never the key itself, in a log line or a traceback
        return f"SigningKey({self.public.fingerprint})"


def _pem(label: str, der: bytes) -> str:
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""])


def _unwrap(text: bytes | str, label: str, prefix: bytes, what: str) -> bytes:
    """The 32 key bytes of a PEM document holding exactly ``prefix`` + 32 bytes."""
    if isinstance(text, bytes):
        if len(text) > MAX_PEM_BYTES:
            raise KeyFormatError(f"not {what}: over {MAX_PEM_BYTES} bytes")
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise KeyFormatError(f"not {what}: not ASCII text") from None
    lines = [line.strip() for line in text.strip().splitlines()]
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    if len(lines) < 3 or lines[0] != begin or lines[-1] != end:
        found = lines[0][:40] if lines else "nothing"
        raise KeyFormatError(f"not {what}: expected {begin!r}, found {found!r}")
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"not {what}: the base64 between the lines is damaged") from None
    if len(der) != len(prefix) + 32 or not der.startswith(prefix):
        raise KeyFormatError(f"not {what}: another algorithm or key form")
    return der[len(prefix) :]
