"""`python -m gateway.sim modbus ...` / `python -m gateway.sim serial ...`: simulated sensors as
standalone processes, for end-to-end tests, benchmarks and trying a config by hand."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("modbus", "serial"):
        print("usage: python -m gateway.sim {modbus|serial} [--help]", file=sys.stderr)
        return 2
    if argv[0] == "modbus":
        from gateway.sim import modbus  # noqa: PLC0415 - import only the simulator asked for

        return modbus.main(argv[1:])
    from gateway.sim import serial  # noqa: PLC0415

    return serial.main(argv[1:])


sys.exit(main(sys.argv[1:]))
