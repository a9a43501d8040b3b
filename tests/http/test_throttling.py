"""Failed-login throttling shared by the password grant and the login form: per (username,
address), per username across addresses and per address across usernames, in the store
(so two broker processes on one store agree), each attempt reserved before ShotGrid is
called. People at different addresses are played by clients bound to 127.0.0.2, .3, ..."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shotgrid_emulator import ShotGridEmulator
from tests.support.broker import RunningBroker, broker_settings, broker_with_emulator, run_broker
from tests.support.clock import MovableClock
from tests.support.oidc import Flow, hidden_fields, submit_login
from tests.support.servers import ServerThread, reserve_port

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
        "login_max_failures_per_user_ip": LIMIT,
        "login_max_failures_per_ip": 50,
        "login_failure_window": WINDOW,
    }
    port_a, port_b = reserve_port(), reserve_port()
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


# --- who is throttled: (username, address), username, address (issue 16, items 1 and 2) ------


def client_at(b: RunningBroker, address: str) -> httpx.Client:
    """A client whose connections come from `address` (any 127.x.y.z reaches the broker)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=b.url, timeout=10, transport=transport)


def sign_in(
    b: RunningBroker, http: httpx.Client, channel: str, username: str, password: str
) -> str:
    """One sign-in on `channel` ("token": the password grant; "form": the login page), as
    "ok", "refused" (ShotGrid said no) or "throttled"."""
    if channel == "token":
        status = b.password_grant(http, username, password).status_code
        return {200: "ok", 400: "refused", 429: "throttled"}[status]
    page = http.get("/authorize", params=Flow().params(prompt="login"))
    assert page.status_code == 200, page.text
    status = submit_login(http, page, username, password).status_code
    return {302: "ok", 200: "refused", 429: "throttled"}[status]


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return values


def raw_form_post(url: str, path: str, fields: dict[str, str], cookie: str = "") -> bytes:
    host = urlsplit(url).netloc
    body = urlencode(fields).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        + (f"Cookie: {cookie}\r\n" if cookie else "")
        + "\r\n"
    )
    return head.encode() + body


def last_byte_burst(url: str, requests: list[bytes], source: str = "127.0.0.1") -> list[int]:
    """Send each request on its own connection without its last byte, then every last byte
    back to back (the single-packet race technique), and return the response statuses."""
    parts = urlsplit(url)
    sockets = []
    try:
        for raw in requests:
            sock = socket.create_connection((parts.hostname, parts.port), 30, (source, 0))
            sock.sendall(raw[:-1])
            sockets.append(sock)
        for sock, raw in zip(sockets, requests, strict=True):
            sock.sendall(raw[-1:])
        statuses = []
        for sock in sockets:
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            statuses.append(int(answer.split(b" ", 2)[1]))
        return statuses
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def throttling_broker(
    tmp_path: Path, clock: MovableClock, **overrides: Any
) -> Iterator[tuple[RunningBroker, ShotGridEmulator]]:
    values = {"login_failure_window": WINDOW, "login_max_failures_per_user_ip": LIMIT}
    with broker_with_emulator(tmp_path, clock, **{**values, **overrides}) as (b, emu, _site):
        yield b, emu


def test_a_synchronised_burst_gets_no_more_than_the_limit_to_shotgrid(
    tmp_path: Path, clock: MovableClock
) -> None:
    """40 wrong passwords for alice, half through the grant and half through the login form,
    released together: exactly LIMIT reach ShotGrid (which answers slowly, so on a
    check-then-count throttle they would all be in flight at once), the rest get 429."""
    with throttling_broker(tmp_path, clock) as (b, emu), b.client() as browser:
        page = browser.get("/authorize", params=Flow().params())
        form = {**hidden_fields(page.text), "username": "alice", "password": "wrong"}
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        grant = {"grant_type": "password", "client_id": "dna-cli"}
        grant.update(username="alice", password="wrong")
        requests = [raw_form_post(b.url, "/token", grant) for _ in range(20)]
        requests += [raw_form_post(b.url, "/authorize", form, cookie) for _ in range(20)]
        emu.faults.set("token:password", latency=0.5)
        before, calls = scrape(b.url), emu.calls["token:password"]
        statuses = last_byte_burst(b.url, requests)
        assert emu.calls["token:password"] - calls == LIMIT
        assert set(statuses[:20]) <= {400, 429} and set(statuses[20:]) <= {200, 429}, statuses
        assert statuses.count(429) == 40 - LIMIT, statuses
        after = scrape(b.url)
        for name, labels in [
            ("broker_logins_total", {"outcome": "throttled"}),
            ("broker_logins_throttled_total", {"endpoint": "/token"}),
            ("broker_logins_throttled_total", {"endpoint": "/authorize"}),
        ]:
            sample = (name, frozenset(labels.items()))
            assert after[sample] > before.get(sample, 0.0), sample
        throttled = ("broker_logins_total", frozenset({("outcome", "throttled")}))
        assert after[throttled] - before.get(throttled, 0.0) == 40 - LIMIT


def test_a_burst_of_right_passwords_from_one_address_all_sign_in(
    tmp_path: Path, clock: MovableClock
) -> None:
    """20 sign-ins of alice from one address at once (render-farm jobs, a load test), none
    wrong, while ShotGrid answers slowly: every one gets tokens, although only LIMIT slots
    exist (the others wait for the attempts in flight), and every one reached ShotGrid."""
    with throttling_broker(tmp_path, clock) as (b, emu):
        grant = {"grant_type": "password", "client_id": "dna-cli"}
        grant.update(username="alice", password="alice-pw")
        emu.faults.set("token:password", latency=0.2)
        calls = emu.calls["token:password"]
        statuses = last_byte_burst(b.url, [raw_form_post(b.url, "/token", grant)] * 20)
        assert statuses == [200] * 20, statuses
        assert emu.calls["token:password"] - calls == 20


@pytest.mark.parametrize("channel", ["token", "form"])
def test_guesses_from_one_address_never_lock_out_another(
    tmp_path: Path, clock: MovableClock, channel: str
) -> None:
    with (
        throttling_broker(tmp_path, clock) as (b, emu),
        client_at(b, "127.0.0.2") as attacker,
        client_at(b, "127.0.0.3") as victim,
    ):
        for _ in range(LIMIT):
            assert sign_in(b, attacker, channel, "alice", "guess") == "refused"
        calls = emu.calls["token:password"]
        assert sign_in(b, attacker, channel, "alice", "guess") == "throttled"
        assert sign_in(b, attacker, channel, "alice", "alice-pw") == "throttled"
        assert emu.calls["token:password"] == calls  # the attacker's tries never left
        assert sign_in(b, victim, channel, "alice", "alice-pw") == "ok"
        assert sign_in(b, victim, channel, "alice", "alice-pw") == "ok"
        assert sign_in(b, attacker, channel, "alice", "guess") == "throttled"  # still
        assert sign_in(b, attacker, channel, " ALICE", "guess") == "throttled"  # one login
        assert sign_in(b, attacker, channel, "bob", "bob-pw") == "ok"  # other accounts
        clock.advance(WINDOW)
        assert sign_in(b, attacker, channel, "alice", "guess") == "refused"


def test_the_username_limit_across_addresses_trips_at_its_number(
    tmp_path: Path, clock: MovableClock
) -> None:
    """Per (username, address) 2, per username 5: five failures spread over three
    addresses; the sixth try for alice, from a fourth address, is refused whatever its
    password, until the window ends. Other usernames are not affected."""
    with throttling_broker(
        tmp_path, clock, login_max_failures_per_user_ip=2, login_max_failures_per_user=5
    ) as (b, emu):
        spread = ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3", "127.0.0.4"]
        for address in spread:
            with client_at(b, address) as http:
                assert sign_in(b, http, "token", "alice", "guess") == "refused"
        calls = emu.calls["token:password"]
        with client_at(b, "127.0.0.5") as fresh:
            assert sign_in(b, fresh, "token", "alice", "alice-pw") == "throttled"
            assert sign_in(b, fresh, "form", "alice", "alice-pw") == "throttled"
            response = b.password_grant(fresh, "alice", "alice-pw")
            assert response.status_code == 429
            assert response.headers["retry-after"] == str(WINDOW)
            clock.advance(WINDOW // 2)
            later = b.password_grant(fresh, "alice", "alice-pw")
            assert later.headers["retry-after"] == str(WINDOW // 2)  # what is left of it
            assert emu.calls["token:password"] == calls
            assert sign_in(b, fresh, "token", "bob", "bob-pw") == "ok"
            clock.advance(WINDOW // 2)
            assert sign_in(b, fresh, "token", "alice", "alice-pw") == "ok"


def test_the_address_limit_counts_usernames_and_trips_at_its_number(
    tmp_path: Path, clock: MovableClock
) -> None:
    """Per address 3: one address failing for u1 (twice: one username), u2 and u3 is
    refused for any fourth username, bob included; another address is not."""
    with (
        throttling_broker(tmp_path, clock, login_max_failures_per_ip=3) as (b, emu),
        client_at(b, "127.0.0.2") as sprayer,
        client_at(b, "127.0.0.3") as other,
    ):
        for username in ("u1", "u1", "u2", "u3"):
            assert sign_in(b, sprayer, "token", username, "Winter2026!") == "refused"
        assert sign_in(b, sprayer, "token", "u1", "again") == "refused"  # u1 is counted
        calls = emu.calls["token:password"]
        assert sign_in(b, sprayer, "token", "u4", "Winter2026!") == "throttled"
        assert sign_in(b, sprayer, "form", "bob", "bob-pw") == "throttled"
        assert emu.calls["token:password"] == calls
        assert sign_in(b, other, "token", "u4", "Winter2026!") == "refused"
        assert sign_in(b, other, "token", "bob", "bob-pw") == "ok"
        clock.advance(WINDOW)
        assert sign_in(b, sprayer, "token", "bob", "bob-pw") == "ok"


def test_a_success_does_not_launder_the_address(tmp_path: Path, clock: MovableClock) -> None:
    with (
        throttling_broker(tmp_path, clock, login_max_failures_per_ip=2) as (b, _emu),
        client_at(b, "127.0.0.2") as http,
    ):
        assert sign_in(b, http, "token", "u1", "x") == "refused"
        assert sign_in(b, http, "token", "alice", "alice-pw") == "ok"  # gives its slot back
        assert sign_in(b, http, "token", "u2", "x") == "refused"
        assert sign_in(b, http, "token", "u3", "x") == "throttled"  # u1 and u2 still count


def test_two_factor_required_and_shotgrid_down_are_not_failures(
    tmp_path: Path, clock: MovableClock
) -> None:
    """The password grant refuses dave (two-factor) after ShotGrid checked his right
    password, and ShotGrid being down says nothing about the password: neither counts.
    (Fewer 503s than the circuit breaker's 5, which would answer for ShotGrid after.)"""
    with throttling_broker(tmp_path, clock) as (b, emu), b.client() as http:
        for _ in range(LIMIT + 2):
            assert b.password_grant(http, "dave").json()["error"] == "invalid_grant"
        emu.faults.set("token:password", status=503, times=LIMIT + 1)
        for _ in range(LIMIT + 1):
            assert b.password_grant(http, "alice", "guess").status_code == 503
        for _ in range(LIMIT - 1):
            assert b.password_grant(http, "dave", "wrong").status_code == 400
        assert b.password_grant(http, "alice").status_code == 200
        assert b.password_grant(http, "dave", "wrong").status_code == 400  # the LIMIT-th
        assert b.password_grant(http, "dave").status_code == 429


def test_unlock_clears_a_users_counters_only(tmp_path: Path, clock: MovableClock) -> None:
    with (
        throttling_broker(
            tmp_path, clock, login_max_failures_per_user_ip=2, login_max_failures_per_ip=4
        ) as (b, _emu),
        client_at(b, "127.0.0.2") as http,
    ):
        for username in ("alice", "alice", "u1", "u2"):
            assert sign_in(b, http, "token", username, "x") == "refused"
        assert sign_in(b, http, "token", "alice", "alice-pw") == "throttled"
        assert b.broker.throttle.unlock(" Alice ") == 2  # alice's and (alice, 127.0.0.2)
        assert b.broker.throttle.unlock("alice") == 0
        assert sign_in(b, http, "token", "alice", "alice-pw") == "ok"
        # The address still counts alice, u1 and u2 (unlock is the user's, not the
        # address's): one more username fills it.
        assert sign_in(b, http, "token", "u3", "x") == "refused"
        assert sign_in(b, http, "token", "u4", "x") == "throttled"
