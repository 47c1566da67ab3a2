"""`python -m gateway.sim modbus ...` / `python -m gateway.sim serial ...`: simulated sensors as
standalone processes, for end-to-end tests, benchmarks and trying a config by hand. Each source
kind that has a simulator adds its name (``SourceKind.simulator``)."""

from __future__ import annotations

import sys

from gateway.sources.registry import installed


def main(argv: list[str]) -> int:
    simulators = installed().simulators()
    if not argv or argv[0] not in simulators:
        print(f"usage: python -m gateway.sim {{{'|'.join(simulators)}}} [--help]", file=sys.stderr)
        return 2
    return simulators[argv[0]](argv[1:])


sys.exit(main(sys.argv[1:]))
