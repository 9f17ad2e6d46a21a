"""GET /metrics in one process (the aggregation across workers is tested in test_serve)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from rolegate.store import ChangeSet
from rolegate.store.policies import PolicyStore


def scrape(live) -> dict[tuple[str, tuple], float]:
    response = live.client.get("/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_decisions_batches_and_latency_are_counted(live):
    before = scrape(live)
    assert live.check("alice", "acme", "/projects/1", "delete").body["allowed"] is True
    assert live.check("carol", "acme", "/projects/1", "delete").body["allowed"] is False
    checks = [{"resource": f"/projects/{i}", "action": "read"} for i in range(7)]
    batch = live.client.post(
        "/v1/check/batch", {"checks": checks}, headers=live.auth("bob", "acme")
    )
    assert batch.status == 200
    after = scrape(live)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("rolegate_decisions_total", result="allow") == 8
    assert delta("rolegate_decisions_total", result="deny") == 1
    assert delta("rolegate_batch_size_count") == 1
    assert delta("rolegate_batch_size_sum") == 7
    assert delta("rolegate_decision_duration_seconds_count", endpoint="check") == 2
    assert delta("rolegate_decision_duration_seconds_count", endpoint="batch") == 1


def test_token_failures_are_counted_by_code(live):
    before = scrape(live)
    body = {"resource": "/projects/1", "action": "read"}
    live.client.post("/v1/check", body, headers={"Authorization": "Bearer not-a-jwt"})
    live.client.post("/v1/check", body)
    after = scrape(live)
    failures = {
        labels: after[(name, labels)] - before.get((name, labels), 0)
        for (name, labels) in after
        if name == "rolegate_token_failures_total"
    }
    assert sum(failures.values()) == 2
    assert all(dict(labels)["code"] != "unknown" for labels, n in failures.items() if n)


def test_revision_reloads_and_decision_log_drops(live, settings, monkeypatch):
    writer = PolicyStore.from_url(settings.database_url)
    before = scrape(live)
    revision = writer.apply(ChangeSet(added=[("g", "zoe", "viewer", "acme")]), actor="test")
    writer.dispose()
    assert live.core.refresh()

    class DecisionLog:  # the decision log's public counter
        dropped = 7

        def close(self):
            pass

    monkeypatch.setattr(live.core, "decision_log", DecisionLog())
    live.client.get("/healthz")
    after = scrape(live)
    assert value(after, "rolegate_policy_revision") == revision
    assert (
        value(after, "rolegate_policy_reload_duration_seconds_count", kind="incremental")
        - value(before, "rolegate_policy_reload_duration_seconds_count", kind="incremental")
        == 1
    )
    assert value(after, "rolegate_decision_log_dropped") == 7
