"""The HTTP app's request hooks (rolegate.api.hooks): one timer, one access line, the headers."""

from __future__ import annotations

import logging

from rolegate import metrics
from rolegate.api import create_app
from rolegate.identity import mint_token


def _histogram_sum(endpoint: str) -> float:
    for family in metrics.get().decision_seconds.collect():
        for sample in family.samples:
            if sample.name.endswith("_sum") and sample.labels == {"endpoint": endpoint}:
                return sample.value
    return 0.0


def _check(core, client, **headers):
    token = mint_token(core.settings, subject="alice", org="acme")
    return client.post(
        "/v1/check",
        json={"resource": "/projects/1", "action": "read"},
        headers={"Authorization": f"Bearer {token}", **headers},
    )


def test_the_access_line_and_the_latency_metric_share_one_measurement(core, caplog):
    client = create_app(core=core, follow_store=False).test_client()
    caplog.set_level(logging.INFO, logger="rolegate.access")
    before = _histogram_sum("check")
    assert _check(core, client).get_json()["allowed"] is True
    observed_ms = (_histogram_sum("check") - before) * 1000
    [line] = [record for record in caplog.records if record.name == "rolegate.access"]
    assert line.path == "/v1/check" and line.status == 200
    assert abs(line.duration_ms - observed_ms) < 0.0006  # rounded to 0.001 ms


def test_request_id_worker_and_revision_headers(core):
    client = create_app(core=core, follow_store=False).test_client()
    response = _check(core, client, **{"X-Request-ID": "req-42"})
    assert response.headers["X-Request-ID"] == "req-42"
    assert response.headers["X-Rolegate-Revision"] == str(core.engine.revision)
    assert response.headers["X-Rolegate-Worker"].isdigit()
    odd = _check(core, client, **{"X-Request-ID": "bad id <script>"})
    assert odd.headers["X-Request-ID"] != "bad id <script>"
    assert len(odd.headers["X-Request-ID"]) == 32
