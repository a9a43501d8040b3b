"""/metrics: Prometheus text with request, grant, upstream, security-event and store
counters; multiprocess mode sums every worker's samples."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock

pytestmark = pytest.mark.timeout(60)

Sample = tuple[str, frozenset[tuple[str, str]]]


def scrape(url: str) -> dict[Sample, float]:
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values: dict[Sample, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return values


def value(values: dict[Sample, float], name: str, **labels: str) -> float:
    return values.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[RunningBroker, MovableClock]]:
    clock = MovableClock()
    with broker_with_emulator(tmp_path, clock) as (broker, _emu, _site):
        yield broker, clock


def test_counters_move_with_what_happens(running: tuple[RunningBroker, MovableClock]) -> None:
    broker, clock = running
    before = scrape(broker.url)
    with broker.client() as http:
        token = broker.password_grant(http).json()["refresh_token"]
        assert broker.password_grant(http, password="wrong").status_code == 400
        assert broker.refresh(http, token).status_code == 200
        clock.advance(broker.settings.refresh_reuse_grace + 1)
        assert broker.refresh(http, token).status_code == 400
        other = broker.password_grant(http).json()["refresh_token"]
        revoked = http.post("/revoke", data={"token": other, "client_id": "dna-cli"})
        assert revoked.status_code == 200
    broker.broker.keys.rotate()
    after = scrape(broker.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    token_ok = {"endpoint": "/token", "method": "POST", "outcome": "success", "status": "200"}
    assert delta("broker_requests_total", grant_type="password", **token_ok) == 2
    assert delta("broker_requests_total", grant_type="refresh_token", **token_ok) == 1
    assert (
        delta(
            "broker_requests_total",
            endpoint="/token",
            method="POST",
            grant_type="password",
            outcome="invalid_grant",
            status="400",
        )
        == 1
    )
    assert delta("broker_tokens_issued_total", grant_type="password") == 2
    assert delta("broker_tokens_issued_total", grant_type="refresh_token") == 1
    assert delta("broker_logins_total", outcome="success") == 2
    assert delta("broker_logins_total", outcome="failure") == 1
    assert delta("broker_refresh_reuse_detected_total") == 1
    assert delta("broker_families_revoked_total", reason="reuse") == 1
    assert delta("broker_families_revoked_total", reason="revoke") == 1
    revoke_ok = {"endpoint": "/revoke", "method": "POST", "grant_type": "none"}
    assert delta("broker_requests_total", outcome="success", status="200", **revoke_ok) == 1
    assert delta("broker_key_events_total", event="key_rotated") == 1
    assert delta("broker_upstream_requests_total", operation="auth_token", outcome="success") == 2
    assert (
        delta("broker_upstream_requests_total", operation="auth_token", outcome="client_error") == 1
    )
    assert delta("broker_upstream_requests_total", operation="human_user_read", outcome="success")
    assert delta("broker_request_duration_seconds_count", endpoint="/token", grant_type="password")
    assert delta("broker_upstream_duration_seconds_count", operation="auth_token") == 3


def test_garbage_cannot_grow_label_sets(running: tuple[RunningBroker, MovableClock]) -> None:
    broker, _ = running
    with broker.client() as http:
        http.post("/token", data={"grant_type": "x" * 40, "client_id": "dna-cli"})
        http.get("/no/such/path/" + "y" * 30)
    text = httpx.get(f"{broker.url}/metrics").text
    assert "x" * 40 not in text
    assert "y" * 30 not in text
    values = scrape(broker.url)
    assert any(
        name == "broker_requests_total" and ("grant_type", "other") in labels
        for name, labels in values
    )
    assert any(
        name == "broker_requests_total" and ("endpoint", "other") in labels
        for name, labels in values
    )


WORKER = """
import sys
from broker import metrics
metrics.observe_event("login", "success", {})
metrics.observe_request("/token", "POST", 200, 0.01, {"grant_type": "password"})
"""

READER = """
from broker.metrics import exposition
body, _ = exposition()
sys_out = body.decode()
print(sys_out)
"""


def test_multiprocess_mode_sums_workers(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", WORKER], env=env, check=True, timeout=30)
    out = subprocess.run(
        [sys.executable, "-c", READER], env=env, check=True, timeout=30, capture_output=True
    ).stdout.decode()
    values = {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(out)
        for s in f.samples
    }
    assert value(values, "broker_logins_total", outcome="success") == 2
    assert value(values, "broker_tokens_issued_total", grant_type="password") == 2
