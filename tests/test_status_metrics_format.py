"""/metrics is written by gateway/prometheus.py: byte for byte what prometheus_client writes.

The daemon does not import prometheus_client (~1 MB of peak RSS); the tests do, as the reference.
"""

from __future__ import annotations

import math

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from status_support import FakeProvider, healthy_provider

from gateway import prometheus
from gateway.model import DeviceStats
from gateway.prometheus import MetricFamily
from gateway.status import SourceView, StatusCollector


class _Reference(Collector):
    """The same families, rebuilt as prometheus_client objects."""

    def __init__(self, families: list[MetricFamily]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        out: list[Metric] = []
        for f in self._families:
            kind = CounterMetricFamily if f.kind == "counter" else GaugeMetricFamily
            family = kind(f.name, f.documentation, labels=list(f.labels))
            for values, value in f.samples:
                family.add_metric(list(values), value)
            out.append(family)
        return out


def _reference_text(families: list[MetricFamily]) -> bytes:
    registry = CollectorRegistry()
    registry.register(_Reference(families))
    return generate_latest(registry)


def _odd_provider() -> FakeProvider:
    """Names and values that need escaping or Go's float spelling."""
    provider = healthy_provider()
    provider.uptime_s = 12_345_678.9
    provider.buffer.bytes = 7 * 1024**3
    provider.buffer.evicted_total = {"max_size": 10**12}
    odd = DeviceStats('back\\slash "quoted"\nnew line', "ünïcode-src", 0.5, reads_ok=10**7)
    provider.source_views.append(SourceView("ünïcode-src", "serial", [odd]))
    return provider


@pytest.mark.parametrize("make", [FakeProvider, healthy_provider, _odd_provider])
def test_status_metrics_are_what_prometheus_client_writes(make: type[FakeProvider]) -> None:
    families = list(StatusCollector(make()).collect())
    assert prometheus.generate_latest(families) == _reference_text(families)
    assert prometheus.CONTENT_TYPE_LATEST == CONTENT_TYPE_LATEST


@pytest.mark.parametrize(
    "value",
    [0, 1, -1, 0.5, 1e-9, 123456.0, 1234567.0, 3145728.0, 1e21, -1e21, 2**53, math.inf,
     -math.inf, math.nan, True, False],
)  # fmt: skip
def test_sample_values_are_spelt_like_prometheus_client(value: float) -> None:
    family = prometheus.gauge("x", "doc \\ with\nnewline", value=value)
    assert prometheus.generate_latest([family]) == _reference_text([family])
