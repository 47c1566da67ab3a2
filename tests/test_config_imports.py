"""The import directions of the config split (issue 24): the contracts in pyproject.toml hold,
and the codecs load nothing of the config or the kinds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "lint-imports is in the test extra: pip install -e '.[test]'"
    result = subprocess.run(
        [lint], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


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
