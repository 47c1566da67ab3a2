"""The remote config's file steps in a child process, for tests that SIGKILL it at one step.

    python tests/remote_child.py INSTALLED NEW_YAML --outcome keep|rollback|recover --kill-at STEP

Checks NEW_YAML against the installed config as the daemon does, then takes the steps
``stage``, ``begin`` and ``commit`` (keep) or ``rollback``, or only the start's ``recover``;
at the durable step named STEP it kills itself with SIGKILL, as a power cut would stop it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from gateway.config import load_config
from gateway.fleet.remote import RemoteFiles, RemoteResult, check_remote, state_dir_of
from gateway.sources.registry import installed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("installed", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--outcome", choices=("keep", "rollback", "recover"), required=True)
    parser.add_argument("--kill-at", required=True)
    args = parser.parse_args()

    def step(name: str) -> None:
        if name == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    kinds = installed()
    local = load_config(args.installed, kinds)
    files = RemoteFiles(state_dir_of(local), on_step=step)
    if args.outcome == "recover":
        files.recover()
        return 0
    checked = check_remote(args.new.read_bytes(), local, files, kinds)
    assert not isinstance(checked, RemoteResult), checked
    files.begin("trial-1")
    if args.outcome == "keep":
        files.commit()
    else:
        files.rollback()
    return 0


if __name__ == "__main__":
    sys.exit(main())
