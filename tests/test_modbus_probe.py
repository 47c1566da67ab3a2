"""`street-gateway probe modbus` against simulated units served by a separate process, and behind
a converter passing RTU frames over TCP."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from fake_device import RTU_REQUEST, fake_device
from support import free_port, stop_process, wait_for_port
from test_modbus_source import socat_pty_pair

from gateway.cli import main
from gateway.codec import rtu


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


@pytest.fixture
def rtu_converter() -> Iterator[int]:
    """A serial-to-Ethernet converter passing RTU frames, units 2 and 4 behind it (the others
    silent, as on a real bus), served from a thread because the probe runs its own loop."""

    async def reply(request: bytes, writer: asyncio.StreamWriter) -> None:
        unit, _, address, count = struct.unpack(">BBHH", request[:6])
        if unit in (2, 4):
            data = b"".join(struct.pack(">H", 0x4100 + address + i) for i in range(count))
            writer.write(rtu.with_crc(bytes([unit, 3, len(data)]) + data))

    port: concurrent.futures.Future[int] = concurrent.futures.Future()
    stop = threading.Event()

    async def serve() -> None:
        async with fake_device(reply, RTU_REQUEST) as listening:
            port.set_result(listening)
            while not stop.is_set():
                await asyncio.sleep(0.01)

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        yield port.result(timeout=10)
    finally:
        stop.set()
        thread.join(10)


def test_scan_and_read_behind_a_converter_with_rtu_framing(
    rtu_converter: int, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--host", "127.0.0.1", "--tcp-port", str(rtu_converter), "--framing", "rtu"]
    assert main(["probe", "modbus", *where, "--scan", "1-5", "--timeout", "0.1"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"unit +(\d+): answers", out) == ["2", "4"]
    assert main(["probe", "modbus", *where, "--unit", "4", "--read", "holding:0:2"]) == 0
    rows = capsys.readouterr().out.splitlines()[2:4]
    assert [row.split()[:3] for row in rows] == [["0", "0x4100", "A."], ["1", "0x4101", "A."]]
