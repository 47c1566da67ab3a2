"""The fleet view: ``street-gateway audit --serve`` as a process, fed through a real mosquitto by
20 simulated gateways (``python -m gateway.sim.fleet``): 3 offline, 1 with a hole, 1 degraded,
2 with a device down, the other 13 fine. The page in headless Chromium puts the seven that
need a person first, most urgent first; promtool checks ``/metrics`` and a real Prometheus
scrapes it; the status endpoint's access rules hold.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from status_support import CHROMIUM, dump_dom
from support import LOOPBACK, Mosquitto, free_port, stop_process, wait_for_port

from e2e.conftest import STREET_GATEWAY

SIM = ["--gateways", "20", "--offline", "3", "--holes", "1", "--degraded", "1",
       "--devices-down", "2", "--remote", "4", "--seconds", "2"]  # fmt: skip
# gateway.sim.fleet gives the flags from the last id down
EXPECTED_FIRST = [
    ("lamppost-0018", "offline"), ("lamppost-0019", "offline"), ("lamppost-0020", "offline"),
    ("lamppost-0017", "holes past grace"), ("lamppost-0016", "degraded"),
    ("lamppost-0014", "devices down"), ("lamppost-0015", "devices down"),
]  # fmt: skip
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")

Serve = Callable[..., int]


def get(url: str, token: str | None = None, host: str | None = None) -> tuple[int, str]:
    """GET with http.client (urllib's HTTPError keeps its socket in a reference cycle)."""
    parts = urllib.parse.urlsplit(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if host:
        headers["Host"] = host
    conn = http.client.HTTPConnection(parts.hostname or LOOPBACK, parts.port, timeout=5)
    try:
        conn.request(
            "GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers
        )
        answer = conn.getresponse()
        return answer.status, answer.read().decode()
    finally:
        conn.close()


@pytest.fixture
def serve_audit(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Serve]:
    """``serve(*extra) -> port``: ``audit --serve 127.0.0.1:<free port>`` as a process."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*extra: str) -> int:
        port = free_port()
        args = [STREET_GATEWAY, "audit", "--broker", mosquitto.url, "--state",
                str(tmp_path / f"audit-{port}.db"), "--grace", "1s",
                "--serve", f"{LOOPBACK}:{port}", *extra]  # fmt: skip
        with (tmp_path / f"audit-{port}.log").open("ab") as log:
            procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
        wait_for_port(port, timeout=15)
        return port

    yield start
    for proc in procs:
        stop_process(proc)


def simulate(mosquitto: Mosquitto) -> None:
    subprocess.run([sys.executable, "-m", "gateway.sim.fleet", "--broker", mosquitto.url, *SIM],
                   check=True, timeout=60, capture_output=True)  # fmt: skip


async def settled(port: int) -> list[dict[str, Any]]:
    """The fleet once all 20 are in and the hole is past its 1 s grace."""
    deadline = time.monotonic() + 20
    while True:
        _, body = await asyncio.to_thread(get, f"http://{LOOPBACK}:{port}/fleet.json")
        gateways: list[dict[str, Any]] = json.loads(body)["gateways"]
        needing = [g for g in gateways if g["needs"]]
        if len(gateways) == 20 and len(needing) == 7:
            return gateways
        assert time.monotonic() < deadline, gateways
        await asyncio.sleep(0.3)


async def test_the_page_puts_the_gateways_that_need_a_person_first(
    serve_audit: Serve, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    port = serve_audit()
    await asyncio.to_thread(simulate, mosquitto)
    gateways = await settled(port)
    assert [(g["id"], g["needs"][0]) for g in gateways[:7]] == EXPECTED_FIRST
    fine = [g["id"] for g in gateways[7:]]
    assert fine == sorted(fine) and all(not g["needs"] for g in gateways[7:])
    hole = gateways[3]
    assert (hole["hole_seqs"], hole["received"]) == (20, 40)  # 2 s at 20/s, 11..30 skipped
    assert gateways[4]["backlog"] == 18_342 and gateways[4]["health"] == "degraded"
    assert gateways[5]["devices_down"] == ["river-1"]
    assert sum(g["config_source"] == "remote" for g in gateways) == 4

    dom = await asyncio.to_thread(
        dump_dom, f"http://{LOOPBACK}:{port}/", tmp_path / "profile", 3000
    )
    order = re.findall(r'<tr class="gw (needs|fine)" data-gateway="([^"]+)"', dom)
    assert [gid for _, gid in order] == [g["id"] for g in gateways]
    assert [kind for kind, _ in order] == ["needs"] * 7 + ["fine"] * 13
    assert "buffer has no room left to take an outage" in dom
    assert "<script" not in dom and "http" not in dom.split("<footer")[0].replace("http-equiv", "")


async def test_metrics_pass_promtool_and_prometheus_scrapes_them(
    serve_audit: Serve, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    port = serve_audit()
    await asyncio.to_thread(simulate, mosquitto)
    await settled(port)
    code, text = await asyncio.to_thread(get, f"http://{LOOPBACK}:{port}/metrics")
    assert code == 200
    samples = {
        (s.name, s.labels.get("gateway")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("street_gateway_fleet_online", "lamppost-0020")] == 0
    assert samples[("street_gateway_fleet_online", "lamppost-0001")] == 1
    assert samples[("street_gateway_fleet_hole_seqs", "lamppost-0017")] == 20
    assert samples[("street_gateway_fleet_healthy", "lamppost-0016")] == 0
    assert samples[("street_gateway_fleet_devices_down", "lamppost-0015")] == 1
    assert samples[("street_gateway_fleet_gateways_needing_attention", None)] == 7
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    check = await asyncio.to_thread(
        subprocess.run, [PROMTOOL, "check", "metrics"], input=text, capture_output=True,
        text=True, timeout=30, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed")
    await scraped_by_prometheus(port, tmp_path)


async def scraped_by_prometheus(port: int, tmp_path: Path) -> None:
    """A real Prometheus scrapes the view every second; its query API then has the series."""
    prom_port = free_port()
    proc = start_prometheus(port, prom_port, tmp_path)
    try:
        wait_for_port(prom_port, timeout=30)
        query = (
            f"http://{LOOPBACK}:{prom_port}/api/v1/query?query=street_gateway_fleet_online%3D%3D0"
        )
        deadline = time.monotonic() + 30
        while True:
            code, body = await asyncio.to_thread(get, query)  # 503 while it starts
            result = json.loads(body)["data"]["result"] if code == 200 else []
            if result:
                break
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-2000:]
            await asyncio.sleep(0.5)
        offline = sorted(r["metric"]["gateway"] for r in result)
        assert offline == ["lamppost-0018", "lamppost-0019", "lamppost-0020"]
    finally:
        stop_process(proc)


def start_prometheus(port: int, prom_port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: fleet, static_configs: [{{targets: ['{LOOPBACK}:{port}']}}]}}\n"
    )
    args = [PROMETHEUS or "prometheus", f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={LOOPBACK}:{prom_port}"]  # fmt: skip
    with (tmp_path / "prometheus.log").open("ab") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)


async def test_the_view_keeps_the_status_endpoints_access_rules(
    serve_audit: Serve, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    open_port = serve_audit()
    code, _ = await asyncio.to_thread(get, f"http://{LOOPBACK}:{open_port}/metrics")
    assert code == 200
    rebound = await asyncio.to_thread(get, f"http://{LOOPBACK}:{open_port}/", None, "evil.example")
    assert rebound[0] == 421  # a page elsewhere whose name was rebound to 127.0.0.1

    token_file = tmp_path / "token"
    token_file.write_text("fleet-secret\n")
    port = serve_audit("--token-file", str(token_file))
    base = f"http://{LOOPBACK}:{port}"
    assert (await asyncio.to_thread(get, f"{base}/metrics"))[0] == 401
    assert (await asyncio.to_thread(get, f"{base}/metrics", "wrong"))[0] == 401
    assert (await asyncio.to_thread(get, f"{base}/metrics", "fleet-secret"))[0] == 200
    assert (await asyncio.to_thread(get, f"{base}/?token=fleet-secret"))[0] == 200
    assert (await asyncio.to_thread(get, f"{base}/health"))[0] == 200

    lan = await asyncio.to_thread(
        subprocess.run,
        [STREET_GATEWAY, "audit", "--broker", mosquitto.url, "--state", str(tmp_path / "x.db"),
         "--serve", "0.0.0.0:8471"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert lan.returncode == 2
    assert "not a loopback address; give --token-file" in lan.stderr
