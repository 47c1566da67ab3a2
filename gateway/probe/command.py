"""`street-gateway probe`: commissioning tools for a technician at the cabinet."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from gateway.probe import modbus as modbus_probe
from gateway.probe import serial as serial_probe


def register(sub: Any) -> None:
    parser = sub.add_parser("probe", help="commissioning: scan a Modbus bus, read a serial sensor")
    parser.set_defaults(func=_usage(parser))  # `probe` alone: say which probes there are
    probes = parser.add_subparsers(title="probes", metavar="PROBE")
    modbus_probe.register(probes)
    serial = probes.add_parser("serial", help="print and parse lines from a serial sensor")
    serial_probe.add_arguments(serial)
    serial.set_defaults(func=serial_probe.run)


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show
