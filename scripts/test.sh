#!/usr/bin/env bash
# Install what the tests need and run every check: ruff, mypy --strict, lint-imports, pytest.
# Works on a fresh machine with only Python and apt: it makes .venv, installs the package with
# its test extras, and installs mosquitto (the real broker the tests start), socat, systemd's
# analyzer and chromium from apt when they are missing and this user may install packages; as
# root also systemd-nspawn and debootstrap for the system test under real systemd.
#
# --fast: the development loop. Everything but the end-to-end tests (tests/e2e), the system test
# (tests/system) and the other tests that start the daemon or the demo as a process (markers
# e2e, system, slow: pyproject.toml), on 4 pytest-xdist workers; no chromium nor container tools
# from apt; ruff and mypy as always. Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=0
if [ "${1:-}" = "--fast" ]; then
    fast=1
    shift
fi

apt_packages=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_packages+=(mosquitto)
command -v socat >/dev/null 2>&1 || apt_packages+=(socat)
command -v snmpd >/dev/null 2>&1 || [ -x /usr/sbin/snmpd ] || apt_packages+=(snmpd)
command -v zstd >/dev/null 2>&1 || apt_packages+=(zstd)  # uplink.compression: the stock CLI decodes
command -v systemd-analyze >/dev/null 2>&1 || apt_packages+=(systemd)
if [ "$fast" -eq 0 ]; then
    command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium fonts-dejavu-core)
    command -v promtool >/dev/null 2>&1 || apt_packages+=(prometheus)  # promtool: the fleet view's /metrics
fi
# The system test (tests/system/) boots Debian 12 with systemd in a container; it needs root.
if [ "$fast" -eq 0 ] && [ "$(id -u)" -eq 0 ]; then
    command -v systemd-nspawn >/dev/null 2>&1 || apt_packages+=(systemd-container)
    command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || apt_packages+=(debootstrap)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    echo "== installing from apt: ${apt_packages[*]}"
    if $sudo true 2>/dev/null; then
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${apt_packages[@]}" >/dev/null || echo "warning: apt could not install everything"
    else
        echo "warning: cannot install ${apt_packages[*]} (not root, no sudo); dependent tests skip or fail"
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
# --fast installs only when pyproject.toml changed since the last install
stamp=.venv/.street-gateway-installed
if [ "$fast" -eq 0 ] || [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "== installing street-gateway[test]"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
fi

echo "== ruff"
.venv/bin/ruff check gateway tests bench
.venv/bin/ruff format --check gateway tests bench
echo "== mypy --strict gateway"
.venv/bin/mypy gateway
echo "== lint-imports: the architecture's contracts (pyproject.toml, docs/architecture.md)"
.venv/bin/lint-imports --no-cache | tail -n 8
if [ "$fast" -eq 1 ]; then
    # four workers: most of these tests wait on real sockets and timers, not on the CPU
    echo "== pytest --fast: without the e2e, system and slow tests, on 4 workers"
    .venv/bin/pytest -n 4 -m "not e2e and not system and not slow" "$@"
    exit
fi
if [ "$(id -u)" -eq 0 ] && command -v systemd-nspawn >/dev/null 2>&1; then
    echo "== system test: runs (root, systemd-nspawn; rootfs cached in /var/cache/street-gateway-tests)"
else
    echo "== system test: skipped (needs root and systemd-nspawn)"
fi
echo "== pytest"
.venv/bin/pytest "$@"
