"""`street-gateway probe`: commissioning tools for a technician at the cabinet."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.probe import modbus as modbus_probe
from gateway.probe import serial as serial_probe


def register(sub: Any) -> None:
    parser = sub.add_parser("probe", help="commissioning: scan a Modbus bus, read a serial sensor")
    probes = parser.add_subparsers(title="probes", metavar="PROBE")
    modbus_probe.register(probes)
    serial = probes.add_parser("serial", help="print and parse lines from a serial sensor")
    serial_probe.add_arguments(serial)
    serial.set_defaults(func=serial_probe.run)


def _not_yet(args: argparse.Namespace) -> int:
    print("street-gateway probe: not yet available (lands with issues 4 and 5)", file=sys.stderr)
    return 1
