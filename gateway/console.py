"""What several commands share: the ``-c`` argument, and loading a config for a person.

Kept apart from ``cli`` so that command modules (``probe``) can use it without importing the
module that imports them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.config import Kinds, LoadedConfig, default_config_path, load_config
from gateway.errors import ConfigError


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help="config file (default $STREET_GATEWAY_CONFIG or /etc/street-gateway/gateway.yaml)",
    )


def load_or_report(path: Path | None, kinds: Kinds) -> LoadedConfig | None:
    """Load the config with the source kinds ``kinds`` (``installed()``), or print one line per
    problem to stderr and return None."""
    try:
        loaded = load_config(path or default_config_path(), kinds)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return None
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return loaded
