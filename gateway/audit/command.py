"""`street-gateway audit`: the fleet's completeness proof, upstream."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "audit", help="upstream: report per gateway what arrived and what is missing"
    )
    parser.add_argument("--broker", required=True, help="broker URL, e.g. mqtt://127.0.0.1:1883")
    parser.add_argument("--prefix", default="street-gateway", help="topic prefix")
    parser.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    print("street-gateway audit: not yet available (lands with issue 9)", file=sys.stderr)
    return 1
