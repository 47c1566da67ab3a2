"""What the loader needs of the source kinds, and what a kind may add at the top of the file.

The registry (``gateway/sources/registry.py``) knows the kinds; the config only reads them
through :class:`Kinds`, which the caller of ``load_config`` passes in (``installed()``), so the
config imports nothing of ``gateway.sources``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config.messages import Problem
from gateway.config.models import Config, PointSpec


def _no_problems(config: Config) -> list[Problem]:
    return []


def _no_warnings(config: Config) -> list[str]:
    return []


def _no_points(entry: Any) -> Sequence[PointSpec]:
    return ()


@dataclass(frozen=True, eq=False)
class Section:
    """A top-level section a source kind adds to the file: a mapping of named entries that its
    sources use (Modbus: ``templates``, point lists its devices share).

    Included files may add entries too, each name defined once across the files. The loader
    validates every entry with ``entry``; :meth:`Config.section` gives the section by its key
    (a kind's :meth:`~gateway.config.SourceConfig.prepared` merges it into its sources). Then
    ``check`` and ``warnings`` see the whole config, key paths from the top, and the ``report``
    of each point ``points`` lists is checked like a device's.
    """

    key: str  # at the top of the file
    entry: Any  # the pydantic type of one entry
    what: str  # what it maps, for a message: "template names to point lists"
    check: Callable[[Config], list[Problem]] = _no_problems
    warnings: Callable[[Config], list[str]] = _no_warnings
    points: Callable[[Any], Sequence[PointSpec]] = _no_points  # an entry's points


class Kinds(Protocol):
    """The installed source kinds, as ``load_config`` reads them: ``Registry`` is one."""

    @property
    def kinds(self) -> Mapping[str, object]:
        """The kinds by name (their ``kind:``)."""

    @property
    def problems(self) -> Sequence[str]:
        """Plugins that could not be loaded, one line each: warnings of every config."""

    @property
    def sections(self) -> Sequence[Section]:
        """The top-level sections the kinds add, each once."""

    @property
    def config_model(self) -> type[Config]:
        """:class:`Config` with ``sources`` as the union of the kinds, and their sections."""

    def unknown(self, name: str) -> str:
        """The message for a ``kind:`` no kind has."""
