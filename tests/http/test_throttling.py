"""Failed-login throttling shared by the password grant and the login form: per username
and per IP, in the store (so two broker processes on one store agree), checked before
ShotGrid is called."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shotgrid_emulator import ShotGridEmulator
from tests.support.broker import RunningBroker, broker_settings, run_broker
from tests.support.clock import MovableClock
from tests.support.oidc import Flow, hidden_fields, submit_login
from tests.support.servers import ServerThread, free_port

LIMIT = 3
WINDOW = 600


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def pair(
    tmp_path: Path, clock: MovableClock
) -> Iterator[tuple[RunningBroker, RunningBroker, ShotGridEmulator]]:
    """Two broker instances (two apps, two ports) on one SQLite file and one emulator."""
    emu = ShotGridEmulator.default(clock=clock)
    site = ServerThread(emu.app).start()
    overrides = {
        "login_max_failures_per_user": LIMIT,
        "login_max_failures_per_ip": 50,
        "login_failure_window": WINDOW,
    }
    port_a, port_b = free_port(), free_port()
    settings_a = broker_settings(tmp_path, site.url, port_a, **overrides)
    settings_b = broker_settings(
        tmp_path,
        site.url,
        port_b,
        secret_key=settings_a.secret_key.get_secret_value(),  # type: ignore[union-attr]
        **overrides,
    )
    try:
        with run_broker(settings_a, clock, port_a) as a, run_broker(settings_b, clock, port_b) as b:
            yield a, b, emu
    finally:
        site.stop()


def test_password_grant_is_throttled_across_instances_before_shotgrid(
    pair: tuple[RunningBroker, RunningBroker, ShotGridEmulator], clock: MovableClock
) -> None:
    a, b, emu = pair
    with a.client() as http_a, b.client() as http_b:
        for i in range(LIMIT):
            http = http_a if i % 2 == 0 else http_b
            response = a.password_grant(http, "alice", "wrong")
            assert response.json()["error"] == "invalid_grant"
        calls = emu.calls["token:password"]
        for http in (http_a, http_b):
            blocked = a.password_grant(http, "alice", "alice-pw")  # even the right password
            assert blocked.status_code == 429
            assert blocked.headers["retry-after"] == str(WINDOW)
            assert blocked.json()["error"]
            assert blocked.headers["cache-control"] == "no-store"
        assert emu.calls["token:password"] == calls  # ShotGrid never saw them
        # Other users are not affected by alice's counter.
        assert a.password_grant(http_b, "bob").status_code == 200
        clock.advance(WINDOW + 1)
        assert a.password_grant(http_a, "alice").status_code == 200


def test_unknown_user_counts_like_a_wrong_password(
    pair: tuple[RunningBroker, RunningBroker, ShotGridEmulator],
) -> None:
    a, _b, _emu = pair
    with a.client() as http:
        answers = [a.password_grant(http, "ghost", "x") for _ in range(LIMIT + 1)]
        wrong = [a.password_grant(http, "alice", "x") for _ in range(LIMIT + 1)]
    assert [r.status_code for r in answers] == [r.status_code for r in wrong]
    assert answers[0].json() == wrong[0].json()
    assert answers[-1].status_code == 429 and answers[-1].json() == wrong[-1].json()


def test_success_resets_the_user_counter(
    pair: tuple[RunningBroker, RunningBroker, ShotGridEmulator],
) -> None:
    a, _b, _emu = pair
    with a.client() as http:
        for _ in range(LIMIT - 1):
            a.password_grant(http, "alice", "wrong")
        assert a.password_grant(http, "alice").status_code == 200
        for _ in range(LIMIT - 1):
            assert a.password_grant(http, "alice", "wrong").status_code == 400


def test_per_ip_limit(tmp_path: Path, clock: MovableClock) -> None:
    from tests.support.broker import broker_with_emulator

    with (
        broker_with_emulator(
            tmp_path, clock, login_max_failures_per_ip=2, login_max_failures_per_user=100
        ) as (b, _emu, _site),
        b.client() as http,
    ):
        assert b.password_grant(http, "u1", "x").status_code == 400
        assert b.password_grant(http, "u2", "x").status_code == 400
        assert b.password_grant(http, "bob").status_code == 429


def test_form_shows_the_same_message_and_is_shared_with_the_grant(
    pair: tuple[RunningBroker, RunningBroker, ShotGridEmulator],
) -> None:
    a, b, emu = pair
    with a.client() as grant_http, b.client() as browser:
        for _ in range(LIMIT):
            a.password_grant(grant_http, "bob", "wrong")
        message = a.password_grant(grant_http, "bob", "wrong").json()["error_description"]
        calls = emu.calls["token:password"]
        page = browser.get("/authorize", params=Flow().params())
        response = submit_login(browser, page, "bob", "bob-pw")
        assert response.status_code == 429
        assert response.headers["retry-after"] == str(WINDOW)
        alert = re.search(r'role="alert"[^>]*>(.*?)</div>', response.text, re.S).group(1)
        assert message in alert.replace("&#39;", "'")
        assert 'value="bob"' in response.text and "bob-pw" not in response.text
        assert hidden_fields(response.text)["csrf_token"]
        assert emu.calls["token:password"] == calls


def test_form_failures_count_for_the_grant(
    pair: tuple[RunningBroker, RunningBroker, ShotGridEmulator],
) -> None:
    a, b, _emu = pair
    with b.client() as browser, a.client() as http:
        for _ in range(LIMIT):
            page = browser.get("/authorize", params=Flow().params())
            assert submit_login(browser, page, "alice", "nope").status_code == 200
        assert a.password_grant(http, "alice").status_code == 429


def test_throttle_response_is_json_with_retry_after(
    pair: tuple[RunningBroker, RunningBroker, ShotGridEmulator],
) -> None:
    a, _b, _emu = pair
    with httpx.Client(base_url=a.url) as http:
        for _ in range(LIMIT):
            a.password_grant(http, "carol", "bad")
        response = a.password_grant(http, "carol", "bad")
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("application/json")
    assert int(response.headers["retry-after"]) > 0
