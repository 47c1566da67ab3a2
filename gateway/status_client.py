"""`street-gateway status`: ask a running daemon and print its status for a person."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("status", help="show a running daemon's status")
    parser.add_argument("-c", "--config", default=None, help="config file (for status.listen)")
    parser.add_argument("--url", default=None, help="base URL of the status endpoint")
    parser.add_argument("--token-file", default=None, help="bearer token file")
    parser.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    print("street-gateway status: not yet available (lands with issue 8)", file=sys.stderr)
    return 3
