"""The registry of source kinds: every kind, built-in or a plugin's, comes in through one seam.

A distribution declares an entry point in group ``street_gateway.sources`` whose name is the
kind and whose object is a :class:`SourceKind` (street-gateway declares its own three in its
``pyproject.toml`` the same way). ``config`` validates ``sources`` with the union of the kinds'
models (:attr:`Registry.config_model`, with the top-level sections they add, like Modbus'
``templates``), ``daemon`` makes each running source with :attr:`SourceKind.make`, and ``cli``
adds each kind's probe: none of them names a kind. The config does not import this module: its
callers pass ``installed()`` to ``load_config``.

Loading a kind imports its package's ``__init__`` only (its config model): the running source,
its probe and its simulator are imported when they are used, so ``check`` stays light. A plugin
that cannot be loaded (an import error, a wrong object) is not a traceback: it becomes one line
in :attr:`Registry.problems`, shown by ``check`` and logged by ``run``, and a source of its kind
is refused with that line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Annotated, Any, Protocol, Union, get_args

from pydantic import BaseModel, Field, create_model

from gateway.config import Config, Name, Section, SourceConfig, quote
from gateway.errors import GatewayError
from gateway.model import SampleSink

if TYPE_CHECKING:
    from gateway.sources.device import Device

GROUP = "street_gateway.sources"


class RunningSource(Protocol):
    """What ``make`` returns: it polls (or listens) until cancelled, handing each sample to the
    sink, and reports its devices through the shared core (:class:`~gateway.sources.device.Device`),
    which gives them their place in ``/status``, metrics, health, backoff and alarms."""

    @property
    def cores(self) -> Sequence[Device]: ...

    async def run(self) -> None: ...


@dataclass(frozen=True)
class SourceKind:
    """One source kind: its name (the ``kind:`` of a source), its config model, and how to make
    the running source; optionally a probe (``street-gateway probe ...``) and a simulator
    (``python -m gateway.sim NAME``)."""

    name: str
    config: type[SourceConfig]
    make: Callable[[Any, SampleSink], RunningSource]  # (its config, the sink) -> the source
    # adds `probe <name>` to the probe command's subparsers; kinds may share one (modbus)
    probe: Callable[[Any], None] | None = None
    simulator: tuple[str, Callable[[list[str]], int]] | None = None  # (name, main(argv))
    origin: str = ""  # the distribution that declares it, for messages
    sections: tuple[Section, ...] = ()  # top-level sections it adds (Modbus: templates)


@dataclass(frozen=True)
class Registry:
    kinds: Mapping[str, SourceKind]
    problems: tuple[str, ...] = ()  # plugins that could not be loaded, one line each
    broken: Mapping[str, str] = field(default_factory=dict)  # kind -> why it is not available

    @classmethod
    def of(cls, kinds: Iterable[SourceKind], problems: Sequence[str] = ()) -> Registry:
        return cls({kind.name: kind for kind in kinds}, tuple(problems))

    def kind(self, name: str) -> SourceKind:
        return self.kinds[name]

    def make(self, config: SourceConfig, sink: SampleSink) -> RunningSource:
        """The running source of ``config``; a plugin that fails to make one is one line."""
        kind = self.kinds[config.kind]
        try:
            return kind.make(config, sink)
        except Exception as exc:
            raise GatewayError(
                f"source {config.name!r}: kind {kind.name!r} (from {kind.origin}) cannot make "
                f"its source: {type(exc).__name__}: {exc}"
            ) from exc

    def unknown(self, name: str) -> str:
        """The message for a ``kind:`` that no installed kind has."""
        if name in self.broken:
            return f"kind {quote(name)} {self.broken[name]}"
        return f"kind {quote(name)} is not one of the installed kinds: {', '.join(self.kinds)}"

    @functools.cached_property
    def sections(self) -> tuple[Section, ...]:
        """The top-level sections these kinds add, each once (both Modbus kinds add templates)."""
        return tuple(dict.fromkeys(s for kind in self.kinds.values() for s in kind.sections))

    @functools.cached_property
    def config_model(self) -> type[Config]:
        """:class:`~gateway.config.Config` with ``sources`` as the union of these kinds, and the
        sections they add: each a mapping of names to its entries, empty by default."""
        models = [kind.config for kind in self.kinds.values()]
        if not models:
            raise RuntimeError("no source kinds are installed: is street-gateway installed?")
        union: Any = models[0] if len(models) == 1 else Union[tuple(models)]  # noqa: UP007
        item = Annotated[union, Field(discriminator="kind")]
        # each section: a mapping of names to its entries (a type built at run time)
        fields: dict[str, Any] = {
            s.key: (dict[Name, s.entry], Field(default_factory=dict))  # type: ignore[name-defined]
            for s in self.sections
        }
        fields["sources"] = (Annotated[list[item], Field(min_length=1)], ...)
        model: type[Config] = create_model("Config", __base__=Config, **fields)
        return model

    def probes(self) -> list[Callable[[Any], None]]:
        """Each probe once, in kind order."""
        return list(dict.fromkeys(k.probe for k in self.kinds.values() if k.probe is not None))

    def simulators(self) -> dict[str, Callable[[list[str]], int]]:
        return dict(k.simulator for k in self.kinds.values() if k.simulator is not None)


@functools.cache
def installed() -> Registry:
    """The kinds of every installed distribution's ``street_gateway.sources`` entry points."""
    return load(_entry_points())


def _entry_points() -> list[metadata.EntryPoint]:
    """Every distribution's entry points of the group, not only the first copy of each name's:
    ``entry_points()`` keeps one distribution per name, and a stale ``*.egg-info`` left in the
    current folder by an editable install would hide the installed one's kinds."""
    found: dict[tuple[str, str], metadata.EntryPoint] = {}
    for dist in metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == GROUP:
                found.setdefault((ep.name, ep.value), ep)
    return list(found.values())


def load(entry_points: Iterable[metadata.EntryPoint]) -> Registry:
    kinds: dict[str, SourceKind] = {}
    problems: list[str] = []
    broken: dict[str, str] = {}
    for ep in sorted(entry_points, key=_builtin_first):
        origin = _origin(ep)
        where = f"source plugin {ep.name!r} ({ep.value}, from {origin})"
        try:
            kind = ep.load()
        except Exception as exc:  # a plugin's bug must not stop the gateway from starting
            reason = f"{type(exc).__name__}: {exc}"
            problems.append(f"{where} cannot be loaded: {reason}")
            broken[ep.name] = f"comes from {origin}, which cannot be loaded: {reason}"
            continue
        why = _invalid(ep.name, kind)
        if why:
            problems.append(f"{where} {why}")
            broken[ep.name] = f"comes from {origin}, which {why}"
            continue
        if kind.name in kinds:
            problems.append(
                f"{where} is ignored: kind {kind.name!r} is already given by "
                f"{kinds[kind.name].origin}"
            )
            continue
        taken = _taken_section(kind, kinds.values())
        if taken:
            problems.append(f"{where} {taken}")
            broken[ep.name] = f"comes from {origin}, which {taken}"
            continue
        kinds[kind.name] = SourceKind(**{**kind.__dict__, "origin": origin})
    return Registry(kinds, tuple(problems), broken)


def _invalid(name: str, kind: object) -> str | None:
    """Why an entry point's object is not a usable SourceKind, or None."""
    if not isinstance(kind, SourceKind):
        return f"is not a SourceKind but {type(kind).__name__}"
    if kind.name != name:
        return f"names its kind {kind.name!r}; the entry point's name must be the kind"
    model = kind.config
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return "has a config that is not a pydantic model"
    if not issubclass(model, SourceConfig):
        return "has a config that does not derive from gateway.config.SourceConfig"
    annotation = model.model_fields["kind"].annotation
    if get_args(annotation) != (name,):
        return f'has a config whose kind is not Literal["{name}"]'
    if model.device_specs is SourceConfig.device_specs:
        return "has a config without device_specs(): the gateway cannot know its devices"
    for section in kind.sections:
        if not isinstance(section, Section):
            return f"has a section that is not a Section but {type(section).__name__}"
        if section.key in Config.model_fields:
            return f"adds a section {section.key!r}, which the config has already"
    return None


def _taken_section(kind: SourceKind, others: Iterable[SourceKind]) -> str | None:
    """Why ``kind`` cannot add its sections: another kind adds another one of the same key."""
    for other in others:
        for mine in kind.sections:
            theirs = next((s for s in other.sections if s.key == mine.key), mine)
            if theirs is not mine:
                return f"adds a section {mine.key!r}, which kind {other.name!r} adds already"
    return None


def _origin(ep: metadata.EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def _builtin_first(ep: metadata.EntryPoint) -> tuple[int, str]:
    """Ours first, so a plugin cannot take over a built-in kind's name; then by name."""
    ours = ep.dist is not None and ep.dist.name == "street-gateway"
    return (0 if ours else 1, ep.name)
