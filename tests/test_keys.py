"""Ed25519 keys and the identity file, checked against the openssl CLI as an independent peer."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.identity import IdentityError, load_identity, read_identity, read_public_key
from gateway.keys import KeyFormatError, PublicKey, SigningKey

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl CLI is not installed")

# RFC 8032 §7.1, test 1: the secret key, its public key, and the signature of the empty message
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def openssl(*args: str, data: bytes | None = None) -> bytes:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *args], input=data, capture_output=True, check=True, timeout=30
    ).stdout


def test_the_rfc_8032_vector_signs_and_verifies() -> None:
    key = SigningKey(RFC8032_SEED)
    assert key.public.raw == RFC8032_PUBLIC
    assert key.sign(b"") == RFC8032_SIG
    assert key.public.verifies(b"", RFC8032_SIG)
    assert not key.public.verifies(b"x", RFC8032_SIG)
    assert not key.public.verifies(b"", RFC8032_SIG[:-1])
    assert key.public.fingerprint == "sha256:" + hashlib.sha256(RFC8032_PUBLIC).hexdigest()
    assert "9d61" not in repr(key)


@needs_openssl
def test_openssl_reads_our_keys_and_verifies_our_signatures(tmp_path: Path) -> None:
    key = SigningKey.generate()
    (tmp_path / "key.pem").write_text(key.pem())
    (tmp_path / "msg").write_bytes(b'{"n":1}')
    (tmp_path / "sig").write_bytes(key.sign(b'{"n":1}'))
    public_pem = openssl("pkey", "-in", str(tmp_path / "key.pem"), "-pubout").decode()
    assert public_pem == key.public.pem()
    (tmp_path / "pub.pem").write_text(public_pem)
    out = openssl(
        "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "pub.pem"), "-rawin",
        "-in", str(tmp_path / "msg"), "-sigfile", str(tmp_path / "sig"),
    )  # fmt: skip
    assert b"Signature Verified Successfully" in out


@needs_openssl
def test_we_read_keys_openssl_makes(tmp_path: Path) -> None:
    private = tmp_path / "operator.pem"
    openssl("genpkey", "-algorithm", "ed25519", "-out", str(private))
    public = tmp_path / "operator.pub"
    openssl("pkey", "-in", str(private), "-pubout", "-out", str(public))
    key = SigningKey.from_pem(private.read_bytes())
    assert read_public_key(public) == key.public
    (tmp_path / "msg").write_bytes(b"close the barrier")
    signature = openssl(
        "pkeyutl", "-sign", "-inkey", str(private), "-rawin", "-in", str(tmp_path / "msg")
    )
    assert key.public.verifies(b"close the barrier", signature)


@needs_openssl
def test_a_key_of_another_algorithm_is_refused_with_one_line(tmp_path: Path) -> None:
    other = tmp_path / "ec.pem"
    openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(other)
    )
    with pytest.raises(KeyFormatError, match="another algorithm"):
        SigningKey.from_pem(other.read_bytes())
    with pytest.raises(KeyFormatError, match="expected '-----BEGIN PUBLIC KEY-----'"):
        PublicKey.from_pem(other.read_bytes())


def test_identity_is_created_once_with_mode_600_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "identity.key"
    key, where, created = load_identity(path, environ={})
    assert created and where == path
    assert path.stat().st_mode & 0o777 == 0o600
    again, _, created_again = load_identity(path, environ={})
    assert not created_again
    assert again.public == key.public
    assert [p.name for p in path.parent.iterdir()] == ["identity.key"]  # no temporary left


def test_a_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    path = tmp_path / "identity.key"
    path.symlink_to(target)
    with pytest.raises(IdentityError, match="cannot read the identity key"):
        load_identity(path, environ={})
    assert target.read_text() == "keep me"


def test_a_key_open_to_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    load_identity(path, environ={})
    path.chmod(0o644)
    with pytest.raises(IdentityError, match=r"mode 644\); chmod 600 it"):
        read_identity(path)


def test_a_damaged_key_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
    os.close(fd)
    with pytest.raises(IdentityError, match="base64 between the lines is damaged"):
        load_identity(path, environ={})


def test_a_systemd_credential_wins_and_nothing_is_created(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    handed = SigningKey.generate()
    fd = os.open(credentials / "identity.key", os.O_WRONLY | os.O_CREAT, 0o400)
    os.write(fd, handed.pem().encode())
    os.close(fd)
    path = tmp_path / "state" / "identity.key"
    key, where, created = load_identity(path, environ={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert key.public == handed.public
    assert where == credentials / "identity.key"
    assert not created
    assert not path.exists()
