"""docs/plugins.md's example plugin, installed from the doc as its own distribution, end to end.

The doc's one ```python block and one ```toml block are saved side by side and pip-installed
(offline: no index, no build isolation) into a fresh venv that sees this project's venv through
a ``.pth`` file, so the plugin is a distribution of its own with its own entry point. The real
daemon then runs from that venv against a real mosquitto with a source of kind
``example-counter``. If the doc rots, this fails.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from e2e.conftest import RunDaemon, Upstream, gateway_config

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "plugins.md"


def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", DOC.read_text(), re.M | re.S)


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a venv with the doc's plugin installed as its own distribution."""
    python_blocks, toml_blocks = doc_blocks("python"), doc_blocks("toml")
    assert len(python_blocks) == 1 and len(toml_blocks) == 1  # what the doc promises
    root = tmp_path_factory.mktemp("plugin")
    source = root / "sgw-example-counter"
    source.mkdir()
    (source / "sgw_example_counter.py").write_text(python_blocks[0])
    (source / "pyproject.toml").write_text(toml_blocks[0])
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # the project's venv as a site dir of this one: street-gateway, pip and setuptools
    ours = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "street_gateway_venv.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n"
    )
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--no-build-isolation", str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    installed = list(Path(purelib).glob("sgw_example_counter-1.0.0.dist-info"))
    assert installed, "the plugin is its own distribution in the new venv"
    return python


def _check(python: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "gateway", "check", "-c", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def counter_config(broker_port: int, state_dir: Path) -> dict[str, object]:
    source = {
        "name": "counter-1",
        "kind": "example-counter",
        "interval": "100ms",
        "points": [{"name": "n", "unit": "polls"}, {"name": "m"}],
    }
    alarm = {"point": "counter-1/n", "above": 5, "priority": "critical"}
    return gateway_config(
        broker_port=broker_port, state_dir=state_dir, sources=[source], alarms=[alarm]
    )


def test_check_reports_a_plugins_mistakes_with_file_and_key_path(
    plugin_python: Path, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "gateway: {id: lamppost-1}\n"
        "uplink: {servers: ['mqtt://127.0.0.1:1883']}\n"
        "sources:\n"
        "  - {name: counter-1, kind: example-counter, interval: 1s,\n"
        "     points: [{name: n, unti: polls}, {name: n}]}\n"
        "  - {name: other, kind: example-countr, points: [{name: n}]}\n"
    )
    result = _check(plugin_python, config)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert f"{config}: sources[0].points[0].unti: unknown key" in lines, lines
    assert any(
        line.startswith(f"{config}: sources[1]: kind 'example-countr' is not one of")
        and "example-counter" in line
        and "modbus-tcp" in line
        for line in lines
    ), lines
    assert "Traceback" not in result.stderr

    config.write_text(
        "gateway: {id: lamppost-1}\n"
        "uplink: {servers: ['mqtt://127.0.0.1:1883']}\n"
        "sources:\n"
        "  - {name: counter-1, kind: example-counter, points: [{name: n}, {name: n}]}\n"
    )
    result = _check(plugin_python, config)
    assert result.returncode == 2
    # the kind's own cross-field check, with its key path
    assert f"{config}: sources[0].points[1].name: point name 'n' is used twice" in (
        result.stderr.splitlines()
    ), result.stderr
    # `schema` includes the plugin's kind and keys
    schema = subprocess.run(
        [str(plugin_python), "-m", "gateway", "schema"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    kinds = json.loads(schema)["properties"]["sources"]["items"]["properties"]["kind"]["enum"]
    assert "example-counter" in kinds and "modbus-rtu" in kinds
    assert "CounterConfig" in json.loads(schema)["$defs"]


async def test_the_doc_plugin_runs_in_the_daemon_end_to_end(
    plugin_python: Path, run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    config = counter_config(upstream.port, tmp_path)
    daemon = run_daemon(config, command=[str(plugin_python), "-m", "gateway"])
    await upstream.wait_until(
        lambda: len(upstream.samples()) >= 10 and upstream.of("alarms"), 20, "samples, an alarm"
    )
    # every poll is one sample whose every point is the poll's count: 1, 2, 3, ...
    samples = sorted(upstream.samples(), key=lambda s: s["seq"])
    assert all(s["device"] == "counter-1" for s in samples)
    counts = [s["values"]["n"] for s in samples]
    assert counts == list(range(1, len(counts) + 1))
    assert all(s["values"]["m"] == s["values"]["n"] for s in samples)
    # meta describes the plugin's device and points
    meta = upstream.meta()
    assert meta is not None
    assert meta["devices"]["counter-1"] == {
        "source": "counter-1",
        "kind": "example-counter",
        "interval_s": 0.1,
        "points": {"n": {"type": "uint32", "unit": "polls"}, "m": {"type": "uint32"}},
    }
    # an alarm on a counter point, raised by the sixth poll
    alarm = upstream.of("alarms")[0].data
    assert alarm["alarm"] == "counter-1/n>5"
    assert alarm["state"] == "raised"
    assert alarm["value"] == 6
    # /status shows its device like a built-in one
    status = await daemon.status()
    (source,) = status["sources"]
    assert source["name"] == "counter-1" and source["kind"] == "example-counter"
    (device,) = source["devices"]
    assert device["name"] == "counter-1" and device["state"] == "ok"
    assert device["reads_ok"] >= len(samples) and device["reads_failed"] == 0
    assert device["interval_s"] == 0.1 and device["interval_reason"] is None
    code, _, metrics = await daemon.get("/metrics")
    assert code == 200 and 'device="counter-1"' in metrics
    assert await daemon.terminate() == 0
