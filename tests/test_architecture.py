"""The house as a checked contract (issue 24): the import contracts in pyproject.toml hold, an
arrow back up breaks them, and the codecs load nothing of the config or the kinds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "lint-imports is in the test extra: pip install -e '.[test]'"
    return subprocess.run(
        [lint],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},  # this tree's gateway, not the installed one
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_contracts_hold() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "arrow", "broken"),
    [
        ("gateway/buffer/journal.py", "import gateway.daemon", ["layers:"]),
        ("gateway/codec/lines.py", "import gateway.config", ["layers:", "the codecs import"]),
        ("gateway/sources/sdi12/port.py", "import gateway.sources.serial", ["source kinds are"]),
    ],
)
def test_an_arrow_back_up_breaks_the_build(
    tmp_path: Path, module: str, arrow: str, broken: list[str]
) -> None:
    shutil.copytree(REPO / "gateway", tmp_path / "gateway", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with (tmp_path / module).open("a") as file:
        file.write(f"\n{arrow}  # the arrow this test adds\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    assert f"0 kept, {len(broken)} broken" not in result.stdout  # not everything broke
    assert f", {len(broken)} broken." in result.stdout, result.stdout[-3000:]
    report = result.stdout.split("Broken contracts", 1)[1]
    named = [line for line in report.splitlines() if line.startswith(tuple(broken))]
    assert len(named) == len(broken), report
    assert arrow.split()[1] in report  # the report names the imported module


def test_the_codecs_load_neither_pydantic_nor_the_config_nor_the_kinds() -> None:
    code = (
        "import json, sys, gateway.codec.registers, gateway.codec.lines, gateway.codec.rtu\n"
        "print(json.dumps([m for m in sys.modules if m.startswith(('gateway.', 'pydantic'))]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(result.stdout)
    assert {m for m in loaded if not m.startswith("gateway.codec")} == {
        "gateway.errors",
        "gateway.model",
    }
