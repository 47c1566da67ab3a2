"""`street-gateway identity` and the key at `run`: one line and the right exit code for a key
that cannot be used, never a traceback, and the key made once when missing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from support import free_port

from gateway.cli import main
from gateway.keys import PublicKey

BAD_KEYS = {
    "open to others": "mode",
    "another algorithm": "algorithm",
    "not a key": "expected",
}


def _config(tmp_path: Path, **security: object) -> Path:
    config = {
        "gateway": {"id": "gw-1"},
        "buffer": {"path": str(tmp_path / "state" / "buffer.db")},
        "uplink": {"servers": ["mqtt://127.0.0.1:1"]},
        "status": {"listen": f"127.0.0.1:{free_port()}"},
        "security": security,
        "sources": [
            {"name": "line", "kind": "serial", "port": "/dev/null",
             "parse": {"regex": "v=(?P<v>[0-9]+)"}, "points": [{"name": "v"}]}
        ],
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_identity_makes_the_key_beside_the_buffer_once_and_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    assert main(["identity", "-c", str(config)]) == 0
    first = capsys.readouterr()
    key_file = tmp_path / "state" / "identity.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "made" in first.err
    pem, fingerprint = first.out.rsplit("-----END PUBLIC KEY-----\n", 1)
    public = PublicKey.from_pem(pem + "-----END PUBLIC KEY-----\n")
    assert fingerprint.strip() == public.fingerprint
    assert "PRIVATE" not in first.out
    assert main(["identity", "-c", str(config)]) == 0
    assert capsys.readouterr().out == first.out  # the same key, not a new one


def _bad_key(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "another algorithm":
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(path)], check=True, capture_output=True,
        )  # fmt: skip
        path.chmod(0o600)
    elif kind == "not a key":
        path.write_text("hello\n")
        path.chmod(0o600)
    else:
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(path)],
            check=True, capture_output=True,
        )  # fmt: skip
        path.chmod(0o644)


@pytest.mark.parametrize("kind", sorted(BAD_KEYS))
def test_a_key_that_cannot_be_used_is_one_line_exit_1_for_identity_and_run(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    key = tmp_path / "keys" / "gw.key"
    _bad_key(key, kind)
    config = _config(tmp_path, identity_key=str(key))
    assert main(["identity", "-c", str(config)]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(key) in err[0] and BAD_KEYS[kind] in err[0]
    assert main(["run", "-c", str(config)]) == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None
    line = errors[0].getMessage()
    assert "\n" not in line and line.startswith("cannot run") and str(key) in line
    assert not (tmp_path / "state" / "buffer.db").exists()  # refused before the buffer opens


def test_a_bad_config_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, seal_interval="-1s")
    assert main(["identity", "-c", str(config)]) == 2
    assert "security.seal_interval" in capsys.readouterr().err


def test_a_missing_key_folder_that_cannot_be_made_is_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = _config(tmp_path, identity_key=str(blocker / "identity.key"))
    assert main(["identity", "-c", str(config)]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "identity" in err[0]


def test_seal_interval_0_turns_seals_off_and_is_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for value in (0, "0", "0s"):
        config = _config(tmp_path, seal_interval=value)
        assert main(["check", "-c", str(config)]) == 0, capsys.readouterr().err
