"""docs/fleet.md's alert rules pass promtool (checked and unit-tested), and the audit's unit
file passes systemd-analyze."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
FLEET_MD = ROOT / "docs" / "fleet.md"
UNIT = ROOT / "systemd" / "street-gateway-audit.service"
PROMTOOL = shutil.which("promtool")


def doc_files(tmp_path: Path) -> dict[str, Path]:
    """Every ```yaml block of docs/fleet.md whose first line is ``# file: NAME``, saved."""
    found = {}
    for block in re.findall(r"```yaml\n(.*?)```", FLEET_MD.read_text(), re.S):
        first = block.splitlines()[0]
        if first.startswith("# file: "):
            path = tmp_path / first.removeprefix("# file: ").strip()
            path.write_text(block)
            found[path.name] = path
    return found


@pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)"
)
def test_the_alert_rules_pass_promtool_check_and_their_unit_test(tmp_path: Path) -> None:
    files = doc_files(tmp_path)
    assert set(files) == {"fleet-alerts.yml", "fleet-alerts.test.yml"}
    for args in (
        ["check", "rules", "fleet-alerts.yml"],
        ["test", "rules", "fleet-alerts.test.yml"],
    ):
        result = subprocess.run([PROMTOOL or "promtool", *args], cwd=tmp_path, capture_output=True,
                                text=True, timeout=60, check=False)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_name_only_metrics_the_fleet_view_serves() -> None:
    served = set(re.findall(r"`(street_gateway_fleet_\w+)`", FLEET_MD.read_text()))
    text = (ROOT / "gateway" / "audit" / "fleet_view.py").read_text()
    for name in served:
        assert name.removesuffix("_total") in text, name
    rules = FLEET_MD.read_text().split("# file: fleet-alerts.yml")[1].split("```")[0]
    assert set(re.findall(r"street_gateway_fleet_\w+", rules)) <= served


def _testable_unit(tmp_path: Path) -> Path:
    text = UNIT.read_text().replace("=/opt/street-gateway/bin/street-gateway ", "=/bin/true ")
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    return copy


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_audit_unit_passes_verify_and_is_sandboxed(tmp_path: Path) -> None:
    unit = _testable_unit(tmp_path)
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=30, check=False)  # fmt: skip
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
    assert match and float(match.group(1)) <= 2.0, security.stdout[-500:]
