"""`street-gateway probe`: commissioning tools for a technician at the cabinet.

Each source kind that has a probe adds it (``SourceKind.probe``): ``probe modbus`` and ``probe
serial`` come from the built-in kinds' packages, a plugin's from the plugin.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from gateway.sources.registry import installed


def register(sub: Any) -> None:
    parser = sub.add_parser("probe", help="commissioning: scan a Modbus bus, read a serial sensor")
    parser.set_defaults(func=_usage(parser))  # `probe` alone: say which probes there are
    probes = parser.add_subparsers(title="probes", metavar="PROBE")
    for add_probe in installed().probes():
        add_probe(probes)


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show
