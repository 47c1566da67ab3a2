"""`street-gateway probe`: commissioning tools for a technician at the cabinet."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("probe", help="commissioning: scan a Modbus bus, read a serial sensor")
    probes = parser.add_subparsers(title="probes", metavar="PROBE")
    modbus = probes.add_parser("modbus", help="scan unit ids, read and decode raw registers")
    modbus.set_defaults(func=_not_yet)
    serial = probes.add_parser("serial", help="print and parse lines from a serial sensor")
    serial.set_defaults(func=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    print("street-gateway probe: not yet available (lands with issues 4 and 5)", file=sys.stderr)
    return 1
