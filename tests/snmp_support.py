"""A real net-snmp ``snmpd`` for the tests: its own config on a free loopback UDP port, values
the test controls, stopped by pid.

Values under ``CONTROLLED`` come from a ``pass`` script that reads a file the test writes
(:meth:`Snmpd.set`), so they change between polls; the agent's own MIB (``system``, ``IF-MIB``)
answers the rest. Two v3 users: ``ups-sha`` (SHA, AES) and ``ups-sha512`` (SHA-512, AES-256).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from support import LOOPBACK, stop_process

CONTROLLED = "1.3.6.1.2.1.33"  # UPS-MIB: served from the values file
COMMUNITY = "cabinet-ro"
USERS = {  # user -> (auth protocol, auth passphrase, priv protocol, priv passphrase)
    "ups-sha": ("SHA", "auth-pass-1", "AES", "priv-pass-1"),
    "ups-sha512": ("SHA512", "auth-pass-512", "AES256", "priv-pass-256"),
}
_NET_SNMP = {"SHA": "SHA", "SHA512": "SHA-512", "AES": "AES", "AES256": "AES-256"}
START_TIMEOUT_S = 10.0

PASS_SCRIPT = """#!/bin/sh
# snmpd's pass protocol: -g OID asks for OID's value: print OID, type and value, or nothing
[ "$1" = "-g" ] || exit 0
while read -r oid type value; do
    if [ "$oid" = "$2" ]; then printf '%s\\n%s\\n%s\\n' "$oid" "$type" "$value"; exit 0; fi
done < "$(dirname "$0")/values"
"""


def snmpd_binary() -> str:
    found = shutil.which("snmpd") or (
        "/usr/sbin/snmpd" if Path("/usr/sbin/snmpd").exists() else None
    )
    if found is None:
        raise RuntimeError("snmpd is not installed; scripts/test.sh installs it (apt: snmpd)")
    return found


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def secret_file(path: Path, text: str) -> Path:
    """A key file as the config wants it: mode 600."""
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@dataclass
class Snmpd:
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    values: dict[str, tuple[str, str]] = field(default_factory=dict)

    def set(self, oid: str, kind: str, value: object) -> None:
        """Serve ``value`` at ``oid`` (under CONTROLLED) as ``kind``: integer, gauge, counter,
        counter64, timeticks, string. Taken from the next request on."""
        self.values[oid.lstrip(".")] = (kind, str(value))
        self._write()

    def unset(self, oid: str) -> None:
        """Stop serving ``oid``: the agent answers noSuchObject for it."""
        self.values.pop(oid.lstrip("."), None)
        self._write()

    def _write(self) -> None:
        lines = [f".{o} {k} {v}\n" for o, (k, v) in self.values.items()]
        tmp = self.workdir / "values.tmp"
        tmp.write_text("".join(lines))
        tmp.replace(self.workdir / "values")  # the script never reads half a file

    def start(self) -> None:
        self.port = self.port or free_udp_port()
        script = self.workdir / "pass.sh"
        script.write_text(PASS_SCRIPT)
        script.chmod(0o755)
        (self.workdir / "values").write_text("")
        users = "".join(
            f'createUser {user} {_NET_SNMP[a]} "{ak}" {_NET_SNMP[p]} "{pk}"\n'
            f"rouser {user} authpriv\n"
            for user, (a, ak, p, pk) in USERS.items()
        )
        conf = self.workdir / "snmpd.conf"
        conf.write_text(
            f"[snmp] persistentDir {self.workdir / 'persist'}\n"
            f"rocommunity {COMMUNITY} {LOOPBACK}\n"
            f"{users}"
            f"pass .{CONTROLLED} {script}\n"
        )
        env = {**os.environ, "MIBS": "", "MIBDIRS": "/nonexistent"}
        log = (self.workdir / "snmpd.log").open("ab")
        self.proc = subprocess.Popen(
            [snmpd_binary(), "-f", "-Lo", "-C", "-c", str(conf), f"udp:{LOOPBACK}:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while "NET-SNMP version" not in self.log():  # printed once it listens
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"snmpd did not start:\n{self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        path = self.workdir / "snmpd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@contextmanager
def running_snmpd(workdir: Path) -> Iterator[Snmpd]:
    workdir.mkdir(parents=True, exist_ok=True)
    agent = Snmpd(workdir)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()
