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


def test_login_form_counts_refusals_as_refusals(
    running: tuple[RunningBroker, MovableClock],
) -> None:
    """A login form shown again after a refused sign-in is a 200 page, and a refusal: its
    outcome is `invalid_grant`, never `success`. Throttled sign-ins are counted too."""
    from tests.support.oidc import Flow, submit_login

    broker, _ = running
    before = scrape(broker.url)
    with broker.client() as http:
        page = http.get("/authorize", params=Flow().params())
        for attempt in range(broker.settings.login_max_failures_per_user_ip + 1):
            again = submit_login(http, page, "bob", f"wrong-{attempt}")
            page = again
        assert again.status_code == 429
        done = submit_login(
            http, http.get("/authorize", params=Flow().params()), "alice", "alice-pw"
        )
        assert done.status_code == 302
    after = scrape(broker.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    form = {"endpoint": "/authorize", "method": "POST", "grant_type": "none"}
    failures = broker.settings.login_max_failures_per_user_ip
    assert delta("broker_requests_total", outcome="invalid_grant", status="200", **form) == failures
    assert delta("broker_requests_total", outcome="invalid_request", status="429", **form) == 1
    assert delta("broker_requests_total", outcome="success", status="302", **form) == 1
    assert delta("broker_requests_total", outcome="success", status="200", **form) == 0
    assert delta("broker_logins_total", outcome="failure") == failures
    assert delta("broker_logins_total", outcome="throttled") == 1
    assert delta("broker_logins_total", outcome="success") == 1


def test_build_info_and_signing_key_gauges(running: tuple[RunningBroker, MovableClock]) -> None:
    from importlib.metadata import version

    broker, clock = running
    values = scrape(broker.url)
    builds = [labels for name, labels in values if name == "broker_build_info"]
    assert len(builds) == 1
    assert ("version", version("shotgrid-token-broker")) in builds[0]
    assert value(values, "broker_build_info", **dict(builds[0])) == 1

    current = broker.broker.keys.current().record
    started = (current.activated_at or current.created_at).timestamp()
    interval = broker.settings.key_rotation_interval
    clock.advance(120)
    values = scrape(broker.url)
    age = value(values, "broker_signing_key_age_seconds", alg="RS256")
    assert 120 <= age <= 121
    due = value(values, "broker_signing_key_next_rotation_timestamp_seconds", alg="RS256")
    assert due == pytest.approx(started + interval, abs=1)
    broker.broker.keys.rotate()
    rotated = scrape(broker.url)
    assert value(rotated, "broker_signing_key_age_seconds", alg="RS256") < 1
    assert value(
        rotated, "broker_signing_key_next_rotation_timestamp_seconds", alg="RS256"
    ) == pytest.approx(clock.now.timestamp() + interval, abs=1)


def test_no_created_series(running: tuple[RunningBroker, MovableClock]) -> None:
    broker, _ = running
    with broker.client() as http:
        assert broker.password_grant(http).status_code == 200
    text = httpx.get(f"{broker.url}/metrics").text
    assert "broker_requests_total{" in text
    assert "_created" not in text
