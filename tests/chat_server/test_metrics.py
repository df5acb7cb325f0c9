"""chat_server/metrics.py: what a node exposes at /metrics, that labels can only take
values from code, and that docs/METRICS.md lists exactly what is exposed."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from chat_server.account_ratelimit import LocalAccountRateLimiter, RateLimit
from chat_server.bus import CaseChanged, LocalBus, LocalNetwork
from chat_server.metrics import CLIENT_FRAME_TYPES, SERVER_FRAME_TYPES, UNKNOWN, HubMetrics
from chat_server.presence import PresenceStats

DOC = Path(__file__).resolve().parents[2] / "docs" / "METRICS.md"
ALLOWED_LABELS = {"type", "code", "reason", "limit", "node", "le"}


def scrape(metrics: HubMetrics) -> dict[str, float]:
    """Every sample of the text exposition as ``name{labels}`` -> value."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def test_recording_shows_in_the_exposition() -> None:
    metrics = HubMetrics("node-7")
    metrics.connections.inc()
    metrics.connections_open.inc()
    metrics.frame_in("msg.send")
    metrics.frame_out("msg.ack", 2)
    metrics.error("rate_limited")
    metrics.closed(4008)
    metrics.observe_commit(messages=5, stored=4, seconds=0.003, ok=True)
    metrics.observe_commit(messages=2, stored=0, seconds=0.5, ok=False)
    seen = scrape(metrics)
    assert seen["target_info{node=node-7}"] == 1
    assert seen["chat_connections_total{}"] == 1 and seen["chat_connections_open{}"] == 1
    assert seen["chat_frames_received_total{type=msg.send}"] == 1
    assert seen["chat_frames_sent_total{type=msg.ack}"] == 2
    assert seen["chat_errors_total{code=rate_limited}"] == 1
    assert seen["chat_closes_total{code=4008}"] == 1
    assert seen["chat_commits_total{}"] == 1 and seen["chat_commit_failures_total{}"] == 1
    assert seen["chat_messages_committed_total{}"] == 4
    assert seen["chat_commit_batch_size_bucket{le=4.0}"] == 0
    assert seen["chat_commit_batch_size_bucket{le=8.0}"] == 1
    assert seen["chat_commit_seconds_count{}"] == 1
    assert seen["process_open_fds{}"] > 0


def test_peer_chosen_strings_never_become_labels() -> None:
    metrics = HubMetrics("n")
    for made_up in ("acc_3f2a9c", "dr-ayesha", "msg.send\n", "x" * 300):
        metrics.frame_in(made_up)
        metrics.frame_out(made_up)
        metrics.error(made_up)
    metrics.closed(4999)
    body = metrics.render()[0].decode()
    for made_up in ("acc_3f2a9c", "dr-ayesha", "x" * 300):
        assert made_up not in body
    seen = scrape(metrics)
    assert seen[f"chat_frames_received_total{{type={UNKNOWN}}}"] == 4
    assert seen[f"chat_errors_total{{code={UNKNOWN}}}"] == 4
    assert seen[f"chat_closes_total{{code={UNKNOWN}}}"] == 1
    # Every label value is one the code knows.
    for key in seen:
        for pair in re.findall(r"[{,]([a-z]+=[^,}]*)", key):
            name, value = pair.split("=", 1)
            assert name in ALLOWED_LABELS, key
            if name == "type":
                assert value in CLIENT_FRAME_TYPES | SERVER_FRAME_TYPES | {UNKNOWN}, key


async def test_components_are_read_at_scrape_time() -> None:
    metrics = HubMetrics("n")
    network = LocalNetwork()
    bus, other = LocalBus("n", network), LocalBus("m", network)
    await bus.start(lambda e: None, lambda: None)
    await other.start(lambda e: None, lambda: None)
    metrics.watch_bus(bus)
    presence = PresenceStats()
    metrics.watch_presence(presence)
    limiter = LocalAccountRateLimiter(RateLimit("send", 1, 1))
    metrics.watch_rate_limiter("send", limiter.stats)

    assert bus.publish(CaseChanged(case_id="c"))
    presence.heartbeats += 3
    limiter.take_now("acc")
    limiter.take_now("acc")
    seen = scrape(metrics)
    assert seen["chat_bus_published_total{}"] == 1 and seen["chat_bus_connected{}"] == 1
    assert seen["chat_bus_dropped_total{reason=overflow}"] == 0
    assert seen["chat_presence_heartbeats_total{}"] == 3
    assert seen["chat_ratelimit_allowed_total{limit=send}"] == 1
    assert seen["chat_ratelimit_refused_total{limit=send}"] == 1
    await bus.close()
    assert scrape(metrics)["chat_bus_connected{}"] == 0


def test_hubs_in_one_process_do_not_share_or_collide() -> None:
    first, second = HubMetrics("a"), HubMetrics("b")
    first.frame_in("ping")
    assert scrape(first)["chat_frames_received_total{type=ping}"] == 1
    assert scrape(second)["chat_frames_received_total{type=ping}"] == 0


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    body, content_type = HubMetrics("n").render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_the_documentation_lists_exactly_what_is_exposed() -> None:
    documented = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"\| `([a-z_]+)` \| (\w+) \| ([^|]*)\|", line)
        if match:
            labels = set(re.findall(r"`(\w+)`", match.group(3)))
            documented[match.group(1)] = (match.group(2), labels)
    exposed = {}
    for family in HubMetrics("n").registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        name = "target_info" if family.name == "target" else name
        labels = {k for s in family.samples for k in s.labels}
        if family.type == "histogram":
            labels |= {"le"}
        exposed[name] = (family.type if family.type != "info" else "gauge", labels)
    # Labelled counters with no child yet (limits) expose no samples: take the doc's.
    for name in ("chat_ratelimit_allowed_total", "chat_ratelimit_refused_total"):
        exposed[name] = (exposed[name][0], {"limit"})
    exposed["chat_ratelimit_fallbacks_total"] = ("counter", {"limit"})
    assert documented == exposed
