"""The gateway's identity key file: read it, or create it safely when it is missing.

The key is ``security.identity_key`` (default ``<state dir>/identity.key``), a PKCS#8 PEM file of
mode 0600. When the unit hands it in as a systemd credential (``LoadCredential=identity.key:...``
puts it in ``$CREDENTIALS_DIRECTORY``), that copy is used and nothing is created.

Creating is the one moment a key can be lost or exposed, so it is done so that neither happens:
the key is written to a new file (``O_EXCL | O_NOFOLLOW``, mode 0600 from the start, never a
planted symlink's target), fsynced, then linked to its name, which fails rather than replace a
key that appeared meanwhile, and the folder is fsynced. A power cut leaves either no key (made
again at the next start, before anything was signed with it) or the whole key. Reading refuses a
file others can read or write, and anything but a regular file.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from gateway.errors import GatewayError
from gateway.keys import KeyFormatError, PublicKey, SigningKey

CREDENTIAL = "identity.key"


class IdentityError(GatewayError):
    """The identity key cannot be used; the message is one line for a person."""


def credential_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The key systemd handed in, if the unit loads one."""
    env = os.environ if environ is None else environ
    folder = env.get("CREDENTIALS_DIRECTORY", "")
    if not folder:
        return None
    path = Path(folder) / CREDENTIAL
    return path if path.exists() else None


def load_identity(
    path: Path, environ: Mapping[str, str] | None = None, *, create: bool = True
) -> tuple[SigningKey, Path, bool]:
    """The signing key, the file it came from, and whether it was created just now."""
    handed_in = credential_path(environ)
    if handed_in is not None:
        return read_identity(handed_in), handed_in, False
    try:
        return read_identity(path), path, False
    except FileNotFoundError:
        if not create:
            raise IdentityError(
                f"{path}: no identity key (street-gateway identity makes one)"
            ) from None
    return create_identity(path), path, True


def read_identity(path: Path) -> SigningKey:
    """Read a key file; FileNotFoundError when there is none, IdentityError when unusable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise IdentityError(f"{path}: cannot read the identity key: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise IdentityError(f"{path}: the identity key is not a regular file")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise IdentityError(
                f"{path}: the identity key is open to group or others "
                f"(mode {stat.S_IMODE(mode):o}); chmod 600 it"
            )
        data = file.read(4097)
    try:
        return SigningKey.from_pem(data)
    except KeyFormatError as exc:
        raise IdentityError(f"{path}: {exc}") from None


def create_identity(path: Path) -> SigningKey:
    """Make a new key at ``path`` (which must not exist), durably, readable by its owner only."""
    key = SigningKey.generate()
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityError(f"{folder}: cannot make the key's folder: {exc.strerror}") from None
    temporary = folder / f".{path.name}.new-{os.getpid()}"
    try:
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        try:
            os.write(fd, key.pem().encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temporary, path)  # fails if a key appeared meanwhile: never replace one
        _fsync_folder(folder)
    except FileExistsError:
        raise IdentityError(
            f"{path}: a key appeared while this one was made; start again"
        ) from None
    except OSError as exc:
        raise IdentityError(f"{path}: cannot write the identity key: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return key


def read_public_key(path: Path) -> PublicKey:
    """An operator's (or a gateway's) public key from its SPKI PEM file, as one-line errors."""
    try:
        with path.open("rb") as file:
            data = file.read(4097)
    except OSError as exc:
        raise IdentityError(f"{path}: cannot read the public key: {exc.strerror}") from None
    try:
        return PublicKey.from_pem(data)
    except KeyFormatError as exc:
        raise IdentityError(f"{path}: {exc}") from None


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
