"""The base model of the file (its own module so that the sections' modules can share it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """The base of every model of the file, a plugin's too: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
