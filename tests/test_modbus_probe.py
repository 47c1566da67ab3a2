"""`street-gateway probe modbus` against simulated units served by a separate process."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from support import free_port, stop_process, wait_for_port
from test_modbus_source import socat_pty_pair

from gateway.cli import main


def _start_sim(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from gateway.sources.modbus.sim import main; "
         "sys.exit(main(sys.argv[1:]))", *args],
        stdout=subprocess.PIPE,
    )  # fmt: skip


@pytest.fixture
def tcp_sim() -> Iterator[int]:
    port = free_port()
    proc = _start_sim("--tcp", f"127.0.0.1:{port}", "--unit", "1:air_quality",
                      "--unit", "5:energy_meter")  # fmt: skip
    try:
        wait_for_port(port)
        yield port
    finally:
        stop_process(proc)
        assert proc.returncode == 0  # SIGTERM is a clean exit
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def rtu_sim() -> Iterator[str]:
    with socat_pty_pair() as (server_tty, client_tty):
        yield from _serving_rtu(server_tty, client_tty)


def _serving_rtu(server_tty: str, client_tty: str) -> Iterator[str]:
    proc = _start_sim("--rtu", server_tty, "--unit", "3:water_level", "--unit", "9:traffic_counter")
    try:
        assert proc.stdout is not None
        assert b"serving" in proc.stdout.readline()
        yield client_tty
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def test_scan_over_rtu_lists_the_units_that_answer(
    rtu_sim: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["probe", "modbus", "--port", rtu_sim, "--baudrate", "19200", "--scan", "1-10",
                 "--timeout", "0.1"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert re.findall(r"unit +(\d+): answers", out) == ["3", "9"]
    assert "2 unit(s) answered: 3, 9" in out


@pytest.mark.parametrize(
    ("units", "found", "code"),
    [("4-6", ["5"], 0), ("10-13", [], 1)],  # through the daemon's own Modbus TCP client
)
def test_scan_over_tcp_lists_who_answers_or_exits_1(
    tcp_sim: int, capsys: pytest.CaptureFixture[str], units: str, found: list[str], code: int
) -> None:
    assert main(["probe", "modbus", "--host", "127.0.0.1", "--tcp-port", str(tcp_sim),
                 "--scan", units, "--timeout", "0.2"]) == code  # fmt: skip
    out, err = capsys.readouterr()
    assert re.findall(r"unit +(\d+): answers", out) == found
    assert ("no unit answered" in err) == (not found)


def test_read_shows_raw_words_and_each_decoding(
    tcp_sim: int, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["probe", "modbus", "--host", "127.0.0.1", "--tcp-port", str(tcp_sim),
                 "--unit", "5", "--read", "input:0:2"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    header, row = out.splitlines()[1:3]
    for column in ("hex", "ascii", "uint16", "int16", "int32 ABCD", "uint32 CDAB", "float32 DCBA"):
        assert column in header
    cells = row.split()
    assert cells[0] == "0" and cells[1].startswith("0x43")  # ~230 V as float32 ABCD
    assert cells[2].startswith("C")  # 0x43 as ASCII
    assert 225 < float(cells[7]) < 235


def test_unreachable_host_and_bad_arguments() -> None:
    port = free_port()
    assert main(["probe", "modbus", "--host", "127.0.0.1", "--tcp-port", str(port),
                 "--unit", "1", "--read", "holding:0:2", "--timeout", "0.2"]) == 1  # fmt: skip
    assert main(["probe", "modbus", "--host", "127.0.0.1", "--read", "flaot:0:2"]) == 2
