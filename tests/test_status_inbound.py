"""What the status shows of the uplink's inbound side: refusals by reason, and a node waiting
for its Sparkplug primary host (a problem listed, health still ok)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from status_support import FakeProvider

from gateway.model import UplinkStats
from gateway.status import StatusCollector, build_status, generate_latest, health, summary_line


def waiting_provider() -> FakeProvider:
    uplink = UplinkStats(
        server="mqtt://127.0.0.1:1883",
        waiting_for="primary host scada-1",
        inbound_refused={"failed": 1, "from_the_future": 2},
    )
    return FakeProvider(uplink=uplink)


def test_waiting_for_the_primary_host_is_a_problem_shown_but_not_degraded() -> None:
    provider = waiting_provider()
    assert health(provider) == (True, [])  # /health stays 200
    doc = build_status(provider)
    assert doc["health"]["status"] == "ok"
    assert doc["health"]["problems"] == [
        "waiting for primary host scada-1: no births and no data upstream, samples are buffered"
    ]
    assert doc["uplink"]["waiting_for"] == "primary host scada-1"
    assert doc["uplink"]["inbound_refused"] == {"failed": 1, "from_the_future": 2}
    assert "uplink connected, waiting for primary host scada-1" in summary_line(provider)


def test_metrics_count_refusals_by_reason_and_show_the_wait() -> None:
    text = generate_latest(StatusCollector(waiting_provider()).collect()).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    refused = "street_gateway_uplink_inbound_refused_total"
    assert samples[refused, (("reason", "failed"),)] == 1
    assert samples[refused, (("reason", "from_the_future"),)] == 2
    assert samples["street_gateway_uplink_waiting", ()] == 1
    idle = generate_latest(StatusCollector(FakeProvider()).collect()).decode()
    assert "street_gateway_uplink_waiting 0.0" in idle and f"{refused}{{" not in idle
