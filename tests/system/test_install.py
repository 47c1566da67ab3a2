"""systemd/README.md's Install section, run word for word on Debian 12 booted with real systemd.

A Debian 12 (bookworm) minimal root file system is made once with debootstrap and cached outside
the repository (``$STREET_GATEWAY_TEST_CACHE``, default ``/var/cache/street-gateway-tests``); each
run boots a copy of it with ``systemd-nspawn -b`` (no network), copies this working tree to
``/opt/src`` and runs every fenced ``sh`` block of the Install section in its own ``bash -euo
pipefail`` shell, as root, in root's home. Then it checks what the README promises of the running
service, and finally runs the Remove section.

Package index: the container has no network. pip in it reaches **wheels built on the host**
(``pip wheel`` of this repository's dependencies, plus setuptools and wheel to build it), copied
to ``/opt/wheels`` and named by the container's ``/etc/pip.conf``: the way a box without
internet is installed (README, "Installing without internet").

Needs root, systemd-nspawn, nsenter and debootstrap (``scripts/test.sh`` installs
systemd-container and debootstrap); without them, or when the Debian mirror cannot be reached
for the first build, the tests are skipped with the reason printed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "systemd" / "README.md"
CACHE = Path(os.environ.get("STREET_GATEWAY_TEST_CACHE", "/var/cache/street-gateway-tests"))
SUITE = "bookworm"
# No procps: the unit must reload without /bin/kill. python3 and python3-venv are what block 1
# installs; they are in the image so that apt needs no network at test time.
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CONFIG = "/etc/street-gateway/gateway.yaml"
SG = "/opt/street-gateway/bin/street-gateway"
BOOT_TIMEOUT_S = 60.0

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------------------------------
# The README's blocks


def sh_blocks(markdown: str, section: str) -> list[str]:
    """The fenced ```sh blocks of one ``## section`` (up to the next ``## ``), in order."""
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"no '## {section}' section in {README}"
    return re.findall(r"^```sh\n(.*?)^```$", match.group(1), re.M | re.S)


# ---------------------------------------------------------------------------------------------
# Host side: the cached root file system and wheels


def _say(request: pytest.FixtureRequest, text: str) -> None:
    """A line on the terminal even while pytest captures output."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n[system test] {text}", flush=True)


def _skip(request: pytest.FixtureRequest, reason: str) -> None:
    _say(request, f"skipped: {reason}")
    pytest.skip(reason)


def _host_mirror() -> str:
    """The Debian mirror the host's apt uses (deb.debian.org when none is found)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1].rstrip("/")
    return "http://deb.debian.org/debian"


def _mirror_problem(mirror: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{mirror}/dists/{SUITE}/Release", timeout=15) as answer:
            answer.read(64)
    except OSError as exc:
        return f"the Debian mirror {mirror} cannot be reached ({exc}); debootstrap needs it once"
    return None


def _rootfs(request: pytest.FixtureRequest) -> Path:
    """The cached pristine rootfs, made with debootstrap when missing (~45-90 s, ~300 MB)."""
    key = hashlib.sha256(f"{SUITE} minbase {PACKAGES}".encode()).hexdigest()[:10]
    root = CACHE / f"rootfs-{SUITE}-{key}"
    if (root / "usr/bin/systemctl").exists():
        return root
    mirror = _host_mirror()
    problem = _mirror_problem(mirror)
    if problem:
        _skip(request, problem)
    _say(request, f"building a {SUITE} rootfs with debootstrap from {mirror} into {root}")
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(partial), mirror],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        _skip(request, f"debootstrap from {mirror} failed: {' / '.join(tail)}")
    partial.rename(root)
    return root


def _wheels(request: pytest.FixtureRequest) -> Path:
    """Wheels of the dependencies (and the build tools), built on the host; cached per
    pyproject.toml. Our own wheel is left out: block 3 builds the package from /opt/src."""
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:10]
    folder = CACHE / f"wheels-{key}"
    if (folder / "complete").exists():
        return folder
    _say(request, f"building wheels of the dependencies into {folder}")
    for stale in CACHE.glob("wheels-*"):  # of an older pyproject.toml
        shutil.rmtree(stale, ignore_errors=True)
    folder.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    for args in (["wheel", str(REPO), "-w"], ["download", "setuptools>=77", "wheel", "-d"]):
        result = subprocess.run(
            [*pip, *args, str(folder)], capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    for own in folder.glob("street_gateway-*.whl"):
        own.unlink()
    (folder / "complete").touch()
    return folder


# ---------------------------------------------------------------------------------------------
# The container


@dataclass
class Container:
    nspawn: subprocess.Popen[bytes]
    leader: int  # the container's systemd (PID 1 inside), as the host sees it

    def run(self, script: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``script`` in a fresh ``bash -euo pipefail`` as root in /root, with a clean env."""
        return subprocess.run(
            [
                "nsenter",
                "-t",
                str(self.leader),
                "-a",
                "env",
                "-i",
                f"PATH={PATH}",
                "HOME=/root",
                "LANG=C.UTF-8",
                "bash",
                "-c",
                'cd "$HOME" && exec bash -euo pipefail -c "$1"',
                "block",
                script,
            ],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def out(self, script: str, timeout: float = 60.0) -> str:
        """stdout of a script that must succeed."""
        result = self.run(script, timeout)
        assert result.returncode == 0, f"{script}\n{result.stdout}{result.stderr}"
        return result.stdout

    def show(self, *props: str) -> dict[str, str]:
        text = self.out(f"systemctl show street-gateway -p {','.join(props)}")
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.out("journalctl -u street-gateway --no-pager -o cat")

    def wait(self, what: str, check: Callable[[], object], within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {within_s:g} s\n{self.journal()[-3000:]}")
            time.sleep(0.2)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _copy_tree(work: Path) -> None:
    """This working tree (tracked and new files, not ignored ones) at /opt/src."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    target = work / "opt" / "src"
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.fixture(scope="module")
def box(request: pytest.FixtureRequest) -> Iterator[Container]:
    """A booted Debian 12 copy with the repo at /opt/src and a wheel folder as its index."""
    if os.geteuid() != 0:
        _skip(request, "needs root (systemd-nspawn)")
    for tool, package in [("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap"),
                          ("nsenter", "util-linux")]:  # fmt: skip
        if shutil.which(tool) is None:
            _skip(request, f"{tool} is not installed (apt-get install {package})")
    pristine = _rootfs(request)
    wheels = _wheels(request)
    work = CACHE / f"run-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(
        ["cp", "-a", "--reflink=auto", str(pristine), str(work)], check=True, timeout=300
    )
    try:
        _copy_tree(work)
        shutil.copytree(wheels, work / "opt" / "wheels")
        (work / "etc" / "pip.conf").write_text(
            "# The system test's index: wheels built on the host (tests/system/test_install.py)\n"
            "[global]\nno-index = true\nfind-links = /opt/wheels\n"
        )
        with (work.parent / f"run-{os.getpid()}.console").open("wb") as console:
            nspawn = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "-D",
                    str(work),
                    "-b",
                    "--register=no",
                    "--keep-unit",
                    "--private-network",
                    "--console=pipe",
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
            )
        container: Container | None = None
        try:
            deadline = time.monotonic() + BOOT_TIMEOUT_S
            while container is None or container.run("systemctl is-system-running").stdout.strip() \
                    not in ("running", "degraded"):  # fmt: skip
                assert nspawn.poll() is None, "systemd-nspawn exited during boot"
                assert time.monotonic() < deadline, "the container did not boot in time"
                time.sleep(0.3)
                if container is None and (leader := _children(nspawn.pid)):
                    container = Container(nspawn, leader[0])
            yield container
        finally:
            _power_off(nspawn, container)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        (work.parent / f"run-{os.getpid()}.console").unlink(missing_ok=True)


def _power_off(nspawn: subprocess.Popen[bytes], container: Container | None) -> None:
    if container is not None and nspawn.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            container.run("systemctl poweroff", timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            nspawn.wait(20)
    if nspawn.poll() is None:  # PID 1 of the container, then nspawn itself, by pid
        if container is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(container.leader, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            nspawn.kill()
        nspawn.wait(20)


def _run_blocks(box: Container, section: str) -> None:
    blocks = sh_blocks(README.read_text(), section)
    assert blocks, f"no sh blocks under '## {section}'"
    for number, block in enumerate(blocks, 1):
        result = box.run(block, timeout=600)
        assert result.returncode == 0, (
            f"{section} block {number} failed ({result.returncode}):\n{block}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )


@pytest.fixture(scope="module")
def installed(box: Container) -> Container:
    _run_blocks(box, "Install")
    return box


# ---------------------------------------------------------------------------------------------
# What the README promises

STATUS_LINE = re.compile(
    r"^(0 of \d+ devices answered yet|(DEGRADED: )?\d+ devices: 0 ok, \d failing, \d down"
    r"(, \d not answered yet)?); uplink down, backlog \d+, published 0$"
)


def test_the_service_is_ready_and_its_status_line_never_calls_a_device_ok(
    installed: Container,
) -> None:
    # The example config's devices are all absent here (no serial ports, no network).
    assert installed.show("ActiveState")["ActiveState"] == "active"  # READY=1 was received
    seen: list[str] = []

    def degraded() -> bool:
        text = installed.show("StatusText")["StatusText"]
        if not seen or seen[-1] != text:
            seen.append(text)
        return re.match(r"DEGRADED: \d+ devices: 0 ok", text) is not None

    installed.wait("STATUS= turns DEGRADED", degraded, within_s=30)
    assert all(STATUS_LINE.match(text) for text in seen), seen
    journal = installed.journal()
    assert re.search(r"street-gateway \S+ started as lamppost-0421", journal)
    assert "noise-1: down: cannot open /dev/ttyAMA0" in journal
    assert "energy-1 (unit 1): poll failed" in journal
    assert "Traceback" not in journal


def test_street_gateway_status_inside_reports_degraded(installed: Container) -> None:
    result = installed.run(f"{SG} status")
    assert result.returncode == 1, result.stdout + result.stderr  # degraded
    assert "health   DEGRADED" in result.stdout
    assert "every device is failing or down (0 ok, " in result.stdout
    for device in ("aq-1", "river-level", "noise-1", "energy-1"):
        assert re.search(rf"^  {device} .* (failing|down) ", result.stdout, re.M), result.stdout


def test_the_daemon_runs_unprivileged_with_no_capabilities(installed: Container) -> None:
    pid = installed.show("MainPID")["MainPID"]
    status = dict(
        line.split(":", 1) for line in installed.out(f"cat /proc/{pid}/status").splitlines()
    )
    uid = installed.out("id -u street-gateway").strip()
    dialout = installed.out("getent group dialout | cut -d: -f3").strip()
    assert status["Uid"].split() == [uid] * 4 and uid != "0"
    assert dialout in status["Groups"].split()
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, (caps, status[caps])
    assert status["NoNewPrivs"].strip() == "1"


def test_systemd_analyze_security_rates_the_running_unit_2_or_better(installed: Container) -> None:
    text = installed.out("systemd-analyze security --no-pager street-gateway")
    match = re.search(r"Overall exposure level for street-gateway.service: ([0-9.]+) (\w+)", text)
    assert match, text[-2000:]
    assert float(match.group(1)) <= 2.0, match.group(0)


def test_reload_takes_a_good_config_and_refuses_a_bad_one_naming_file_and_key(
    installed: Container,
) -> None:
    pid = installed.show("MainPID")["MainPID"]
    installed.out(f"sed -i 's/cabinet: GP-07/cabinet: GP-08/' {CONFIG}")
    assert installed.run("systemctl reload street-gateway").returncode == 0
    installed.wait("the reload", lambda: f"reloaded {CONFIG}" in installed.journal(), 15)
    labels = installed.out(f"{SG} status --json || true")
    assert '"cabinet": "GP-08"' in labels

    installed.out(f"sed -i '0,/type: uint16/s//type: flaot32/' {CONFIG}")
    refused = installed.run("systemctl reload street-gateway")
    assert refused.returncode != 0  # ExecReload's check failed the reload
    problem = f"{CONFIG}: sources[0].devices[0].points[0].type: "
    installed.wait("check's problem in the journal", lambda: problem in installed.journal(), 15)
    # The daemon itself also refuses a bad config sent by a bare SIGHUP.
    installed.out("systemctl kill -s HUP --kill-who=main street-gateway")
    installed.wait("the daemon's refusal", lambda: "reload refused" in installed.journal(), 15)
    after = installed.show("ActiveState", "MainPID")
    assert after == {"ActiveState": "active", "MainPID": pid}
    installed.out(f"sed -i 's/type: flaot32/type: uint16/' {CONFIG}")
    assert installed.run(f"{SG} check -c {CONFIG}").returncode == 0


def test_the_watchdog_restarts_a_stopped_daemon(installed: Container) -> None:
    before = installed.show("MainPID", "NRestarts")
    installed.out(f"kill -STOP {before['MainPID']}")  # bash's own kill: no procps in the box

    def restarted() -> bool:
        now = installed.show("MainPID", "NRestarts", "ActiveState")
        return (
            int(now["NRestarts"]) > int(before["NRestarts"])
            and now["MainPID"] not in ("0", before["MainPID"])
            and now["ActiveState"] == "active"
        )

    # WatchdogSec=30 and RestartSec=5: the pings stop, systemd kills and restarts the service
    installed.wait("a watchdog restart", restarted, within_s=60)
    assert "Watchdog timeout" in installed.journal()


def test_running_the_install_blocks_again_upgrades_in_place(installed: Container) -> None:
    pid = installed.show("MainPID")["MainPID"]
    _run_blocks(installed, "Install")
    assert installed.show("ActiveState")["ActiveState"] == "active"
    assert installed.show("MainPID")["MainPID"] != pid  # restarted on the new install
    assert "cabinet: GP-08" in installed.out(f"cat {CONFIG}")  # the config was kept


def test_stop_is_clean_and_within_5_s(installed: Container) -> None:
    started = time.monotonic()
    installed.out("systemctl stop street-gateway")
    took = time.monotonic() - started
    result = installed.show("ActiveState", "Result", "ExecMainStatus")
    assert result == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    assert took < 5.0, f"systemctl stop took {took:.1f} s"
    assert "stopped: buffer closed" in installed.journal()


def test_the_remove_blocks_leave_nothing_behind(installed: Container) -> None:
    _run_blocks(installed, "Remove")
    gone = installed.out(
        "for p in /opt/street-gateway /etc/street-gateway /var/lib/street-gateway "
        "/etc/systemd/system/street-gateway.service; do [ -e $p ] && echo $p; done; true"
    )
    assert gone == ""
    assert installed.run("id street-gateway").returncode != 0
    assert installed.run("systemctl cat street-gateway").returncode != 0
