"""The Prometheus text exposition, byte for byte as prometheus_client's generate_latest()
writes these families (tests/test_status_metrics_format.py compares them). Pure.

Importing prometheus_client costs ~1 MB of the daemon's peak RSS (its HTTP and WSGI servers,
push gateway and default collectors come with it) for the ~40 lines below (docs/perf/e2e.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

CONTENT_TYPE_LATEST = "text/plain; version=1.0.0; charset=utf-8"


@dataclass(slots=True)
class MetricFamily:
    """One metric: its HELP, TYPE and samples. A counter's ``name`` is without ``_total``."""

    name: str
    kind: Literal["counter", "gauge"]
    documentation: str
    labels: Sequence[str] = ()
    samples: list[tuple[Sequence[str], float]] = field(default_factory=list)

    def add_metric(self, values: Sequence[str], value: float) -> None:
        self.samples.append((values, value))


def gauge(
    name: str, doc: str, value: float | None = None, labels: Sequence[str] = ()
) -> MetricFamily:
    """A gauge with labels (samples added later), or one unlabelled sample of ``value``."""
    return _family("gauge", name, doc, value, labels)


def counter(
    name: str, doc: str, value: float | None = None, labels: Sequence[str] = ()
) -> MetricFamily:
    """A counter with labels (samples added later), or one unlabelled sample of ``value``."""
    return _family("counter", name, doc, value, labels)


def _family(
    kind: Literal["counter", "gauge"],
    name: str,
    doc: str,
    value: float | None,
    labels: Sequence[str],
) -> MetricFamily:
    family = MetricFamily(name, kind, doc, labels)
    if value is not None:
        family.add_metric((), value)
    return family


def generate_latest(families: Iterable[MetricFamily]) -> bytes:
    """The Prometheus text format: HELP, TYPE, then one line per sample, labels sorted by name."""
    out = []
    for family in families:
        name = f"{family.name}_total" if family.kind == "counter" else family.name
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {family.kind}\n")
        for values, value in family.samples:
            pairs = sorted(zip(family.labels, values, strict=True))
            labels = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in pairs)
            out.append(f"{name}{{{labels}}} " if labels else f"{name} ")
            out.append(f"{_go_float(value)}\n")
    return "".join(out).encode("utf-8")


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _go_float(value: float) -> str:
    """A sample value as Go (and prometheus_client) writes it: 1.0, 3.145728e+06, NaN, +Inf."""
    d = float(value)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s
