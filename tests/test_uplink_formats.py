"""The table of wire formats: every `uplink.format` the config accepts has a maker, and each
maker gives the format that name promises (a real config, a real buffer folder)."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
import yaml

from gateway.config import Config, UplinkConfig
from gateway.sources.registry import installed
from gateway.uplink.catalog import catalog_of
from gateway.uplink.formats import FORMATS, FormatInputs
from gateway.uplink.json_format import JsonFormat
from gateway.uplink.wire import SessionFormat


def test_every_configurable_format_has_a_maker() -> None:
    accepted = set(get_args(UplinkConfig.model_fields["format"].annotation))
    assert set(FORMATS) == accepted


CONFIGS = Path(__file__).parent.parent / "configs"


def _config(fmt: str) -> Config:
    """configs/sparkplug.yaml, its uplink.format set to ``fmt``."""
    raw = yaml.safe_load((CONFIGS / "sparkplug.yaml").read_text())
    raw["uplink"]["format"] = fmt
    return installed().config_model.model_validate(raw)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_maker_gives_its_format(fmt: str, tmp_path: Path) -> None:
    config = _config(fmt)
    chosen = FORMATS[fmt](
        FormatInputs(config, catalog_of(config, "d"), tmp_path / "buffer.db", 1, dict, bool)
    )
    if fmt == "json":
        assert isinstance(chosen.wire_format, JsonFormat) and chosen.session_counter is None
    else:
        assert isinstance(chosen.wire_format, SessionFormat)
        assert chosen.session_counter is not None
        assert [chosen.session_counter(), chosen.session_counter()] == [0, 1]  # durable bdSeq
        assert (tmp_path / "buffer.db.bdseq").read_text() == "1\n"
