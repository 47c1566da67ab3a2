"""`street-gateway schema`: a JSON Schema that every shipped config passes and mistakes fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.config.reader import parse_yaml

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "schema"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(document)
    return document


def _errors(schema: dict[str, Any], document: object) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_there_are_configs_to_check() -> None:
    assert {p.name for p in CONFIGS} >= {"example.yaml", "demo.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_passes_the_schema(schema: dict[str, Any], path: Path) -> None:
    # read as the gateway reads it (YAML 1.2 booleans, as editors read it too)
    assert _errors(schema, parse_yaml(path.read_bytes(), path.name)) == []


def test_mistakes_a_technician_makes_fail_the_schema(schema: dict[str, Any]) -> None:
    config = parse_yaml((CONFIGS[0].parent / "example.yaml").read_bytes(), "example.yaml")
    config["sources"][0]["devices"][0]["points"][0]["type"] = "flaot32"
    config["sources"][0]["devices"][0]["interval"] = 10  # a bare number: no unit
    config["buffer"]["max_size"] = "256 megs"
    config["uplink"]["colour"] = "blue"
    errors = _errors(schema, config)
    assert any(e.startswith("sources.0.devices.0.points.0.type: 'flaot32'") for e in errors), errors
    assert any(e.startswith("sources.0.devices.0.interval: 10 is not of type 'string'")
               for e in errors), errors  # fmt: skip
    assert any(e.startswith("buffer.max_size: '256 megs' does not match") for e in errors), errors
    assert any(e.startswith("uplink: Additional properties") for e in errors), errors


def _properties(node: object) -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items():
            found.append((name, sub))
        for value in node.values():
            found += _properties(value)
    elif isinstance(node, list):
        for item in node:
            found += _properties(item)
    return found


def test_every_default_an_editor_offers_passes_its_own_schema(schema: dict[str, Any]) -> None:
    defs = schema["$defs"]
    checked = 0
    for name, prop in _properties(schema):
        if "default" in prop and prop["default"] is not None:
            resolver = {**prop, "$defs": defs}
            assert _errors(resolver, prop["default"]) == [], (name, prop)
            checked += 1
    assert checked >= 20
