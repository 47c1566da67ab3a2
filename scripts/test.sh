#!/usr/bin/env bash
# Install what the tests need and run every check: ruff, mypy --strict, pytest.
# Works on a fresh machine with only Python and apt: it makes .venv, installs the package with
# its test extras, and installs mosquitto (the real broker the tests start), socat, systemd's
# analyzer and chromium from apt when they are missing and this user may install packages; as
# root also systemd-nspawn and debootstrap for the system test under real systemd.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_packages+=(mosquitto)
command -v socat >/dev/null 2>&1 || apt_packages+=(socat)
command -v snmpd >/dev/null 2>&1 || [ -x /usr/sbin/snmpd ] || apt_packages+=(snmpd)
command -v systemd-analyze >/dev/null 2>&1 || apt_packages+=(systemd)
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium fonts-dejavu-core)
# The system test (tests/system/) boots Debian 12 with systemd in a container; it needs root.
if [ "$(id -u)" -eq 0 ]; then
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
echo "== installing street-gateway[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff"
.venv/bin/ruff check gateway tests bench
.venv/bin/ruff format --check gateway tests bench
echo "== mypy --strict gateway"
.venv/bin/mypy gateway
if [ "$(id -u)" -eq 0 ] && command -v systemd-nspawn >/dev/null 2>&1; then
    echo "== system test: runs (root, systemd-nspawn; rootfs cached in /var/cache/street-gateway-tests)"
else
    echo "== system test: skipped (needs root and systemd-nspawn)"
fi
echo "== pytest"
.venv/bin/pytest "$@"
