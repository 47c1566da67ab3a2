"""The docs stand on their own: no links outside the repository, and every config key named."""

from __future__ import annotations

import re
import subprocess
import typing
from pathlib import Path

from pydantic import BaseModel

from gateway.sources.registry import installed

REPO = Path(__file__).parent.parent
REFERENCE = REPO / "docs" / "reference.md"


def test_no_product_file_points_outside_the_repository() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "gateway", "docs", "systemd", "configs", "README.md"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    offenders = []
    for name in listed:
        path = REPO / name
        if path.suffix in {".py", ".md", ".yaml", ".service"} and path.is_file():
            text = path.read_text()
            if re.search(r"\.\./shared|\bSPEC\.md\b|\bSTYLE\.md\b", text):
                offenders.append(name)
    assert offenders == []


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        for arg in _flatten(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                _models(arg, seen)


def _flatten(annotation: object) -> list[object]:
    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    return [a for arg in args for a in _flatten(arg)]


def test_the_reference_names_every_config_key() -> None:
    models: set[type[BaseModel]] = set()
    _models(installed().config_model, models)  # every installed kind's keys
    text = REFERENCE.read_text()
    keys = {name for model in models for name in model.model_fields}
    assert len(keys) > 60  # every section and source kind was walked
    missing = sorted(k for k in keys if f"`{k}" not in text and f"{k}`" not in text)
    assert missing == []
