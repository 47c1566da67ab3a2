"""A power cut at any step of applying a remote config leaves the box on one valid config, the
old or the new, never a mix and never none: a child process (tests/remote_child.py) takes the
steps and is killed with SIGKILL at each durable one; then the start's choice (the daemon's
``at_start``) is checked. The old config is the installed file, or a remote one already in use.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.config import load_config
from gateway.fleet.remote import RemoteFiles, at_start
from gateway.sources.registry import installed

CHILD = Path(__file__).with_name("remote_child.py")
KEEP_STEPS = ["staged", "prev_saved", "marked", "replaced", "committed", "cleaned", "never"]
ROLLBACK_STEPS = ["restored", "unmarked", "never"]
# after "committed" the new config is kept; before, a start finds it unconfirmed (or absent)
KEPT_FROM = KEEP_STEPS.index("committed")


def config(state: Path, site: str) -> str:
    return yaml.safe_dump({
        "gateway": {"id": "lamppost-0421", "labels": {"site": site}},
        "buffer": {"path": str(state / "buffer.db")},
        "uplink": {"servers": ["mqtt://127.0.0.1:1883"]},
        "sources": [{"name": "bus", "kind": "modbus-tcp", "host": "127.0.0.1", "devices": [
            {"name": "aq-1", "unit": 1, "interval": "10s", "points": [
                {"name": "pm25", "table": "input", "address": 0, "type": "uint16"}]}]}],
    })  # fmt: skip


def run_child(installed_path: Path, new: Path, outcome: str, kill_at: str) -> int:
    args = [sys.executable, str(CHILD), str(installed_path), str(new),
            "--outcome", outcome, "--kill-at", kill_at]  # fmt: skip
    return subprocess.run(args, timeout=60, check=False, capture_output=True).returncode


def site_at_start(installed_path: Path) -> tuple[str, str]:
    """(the site label of the config a start would run, its source); the files left tidy."""
    loaded, source, _ = at_start(load_config(installed_path, installed()), installed())
    files = RemoteFiles(installed_path.parent)
    assert not files.new.exists() and not files.pending.exists()
    return loaded.config.gateway.labels["site"], source


@pytest.fixture(params=["local", "remote"])
def box(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    """The installed config, and the site of the config in use (a remote one or the installed)."""
    path = tmp_path / "gateway.yaml"
    path.write_text(config(tmp_path, "installed"))
    if request.param == "remote":
        (tmp_path / "remote.yaml").write_text(config(tmp_path, "old-remote"))
        return path, "old-remote"
    return path, "installed"


@pytest.mark.parametrize("kill_at", KEEP_STEPS)
def test_kill_9_while_keeping_leaves_the_old_or_the_new(
    box: tuple[Path, str], kill_at: str
) -> None:
    installed_path, old = box
    new = installed_path.with_name("new.yaml")
    new.write_text(config(installed_path.parent, "new"))
    code = run_child(installed_path, new, "keep", kill_at)
    never_reached = kill_at == "never" or (kill_at == "prev_saved" and old == "installed")
    assert code == (0 if never_reached else -9)
    site, source = site_at_start(installed_path)
    if never_reached or KEEP_STEPS.index(kill_at) >= KEPT_FROM:
        assert (site, source) == ("new", "remote")
    else:
        assert site == old
    assert installed_path.read_text() == config(installed_path.parent, "installed")


@pytest.mark.parametrize("kill_at", ROLLBACK_STEPS)
def test_kill_9_while_rolling_back_leaves_the_old(box: tuple[Path, str], kill_at: str) -> None:
    installed_path, old = box
    new = installed_path.with_name("new.yaml")
    new.write_text(config(installed_path.parent, "new"))
    assert run_child(installed_path, new, "rollback", kill_at) == (0 if kill_at == "never" else -9)
    assert site_at_start(installed_path)[0] == old


@pytest.mark.parametrize("kill_at", ["restored", "unmarked"])
def test_kill_9_while_the_start_recovers_then_again_leaves_the_old(
    box: tuple[Path, str], kill_at: str
) -> None:
    installed_path, old = box
    new = installed_path.with_name("new.yaml")
    new.write_text(config(installed_path.parent, "new"))
    assert run_child(installed_path, new, "keep", "replaced") == -9  # on trial, unconfirmed
    assert run_child(installed_path, new, "recover", kill_at) == -9
    assert site_at_start(installed_path)[0] == old
