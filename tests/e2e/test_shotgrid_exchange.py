"""Token exchange for ShotGrid REST tokens (RFC 8693, requested_token_type
`urn:shotgrid:params:oauth:token-type:access_token`) end to end: real broker, real
emulator over HTTP, in both upstream strategies (`sudo` and `custody`)."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shotgrid_emulator import ShotGridEmulator
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.servers import ServerThread
from tests.support.services import SHOTGRID_TOKEN_TYPE, exchange, login

pytestmark = pytest.mark.timeout(90)

Env = tuple[RunningBroker, ShotGridEmulator, ServerThread]

#: The upstream call each strategy makes to obtain a ShotGrid token for a user.
UPSTREAM_CALL = {"sudo": "token:client_credentials", "custody": "token:refresh_token"}


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture(params=["sudo", "custody"])
def strategy(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def env(tmp_path: Path, clock: MovableClock, strategy: str) -> Iterator[Env]:
    with broker_with_emulator(tmp_path, clock, upstream_strategy=strategy) as running:
        yield running


def shotgrid_token(http: httpx.Client, subject: str) -> httpx.Response:
    return exchange(http, subject, requested_token_type=SHOTGRID_TOKEN_TYPE)


def project_ids(site: ServerThread, token: str) -> set[int]:
    response = httpx.get(
        f"{site.url}/api/v1/entity/projects",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["data"]}


@pytest.mark.parametrize(("user", "projects"), [("alice", {201, 202}), ("bob", {202, 203})])
def test_token_sees_exactly_the_users_projects(env: Env, user: str, projects: set[int]) -> None:
    running, _emu, site = env
    with running.client() as http:
        subject = login(running, http, user)["access_token"]
        response = shotgrid_token(http, subject)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["issued_token_type"] == SHOTGRID_TOKEN_TYPE
    assert 0 < body["expires_in"] <= 600
    assert "refresh_token" not in body
    assert project_ids(site, body["access_token"]) == projects


def test_twenty_concurrent_exchanges_make_one_upstream_call(
    env: Env, clock: MovableClock, strategy: str
) -> None:
    running, emu, site = env
    with running.client() as http:
        subject = login(running, http)["access_token"]
    if strategy == "custody":
        # The ShotGrid token kept at login is fresh: move to just before it expires so the
        # exchanges must refresh it (the broker renews 60 s ahead); the subject (600 s)
        # still has 50 s to live.
        clock.advance(550)
    emu.reset_counters()
    # A slow ShotGrid keeps the first upstream call in flight while the others arrive.
    emu.faults.set("token", latency=0.5)
    clients = [running.client() for _ in range(20)]
    barrier = threading.Barrier(20)

    def one(client: httpx.Client) -> httpx.Response:
        with client:
            barrier.wait(timeout=10)
            return shotgrid_token(client, subject)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(one, clients))
    emu.faults.clear()
    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses]
    assert emu.calls[UPSTREAM_CALL[strategy]] == 1
    assert emu.calls["token"] == 1
    tokens = {r.json()["access_token"] for r in responses}
    assert len(tokens) == 1  # everyone got the one upstream token
    assert project_ids(site, tokens.pop()) == {201, 202}


def test_upstream_token_is_reused_until_shortly_before_it_expires(
    env: Env, clock: MovableClock, strategy: str
) -> None:
    running, emu, _site = env
    with running.client() as http:
        tokens = login(running, http)
        emu.reset_counters()
        first = shotgrid_token(http, tokens["access_token"]).json()
        again = shotgrid_token(http, tokens["access_token"]).json()
        assert again["access_token"] == first["access_token"]
        calls = emu.calls["token"]
        assert calls == (1 if strategy == "sudo" else 0)  # custody: the login's token
        clock.advance(530)  # 70 s left upstream: still reused
        later = shotgrid_token(http, tokens["access_token"]).json()
        assert later["access_token"] == first["access_token"]
        assert emu.calls["token"] == calls
        clock.advance(20)  # 50 s left: renewed
        renewed = shotgrid_token(http, tokens["access_token"]).json()
        assert renewed["access_token"] != first["access_token"]
        assert renewed["expires_in"] == 600
        assert emu.calls["token"] == calls + 1


def test_rotated_upstream_refresh_token_is_kept_sealed(
    env: Env, clock: MovableClock, strategy: str
) -> None:
    """Custody: each renewal stores ShotGrid's rotated refresh token (strict single use in
    the emulator), so a second renewal works too; nothing is stored in clear."""
    running, _emu, _site = env
    if strategy != "custody":
        pytest.skip("custody only")
    with running.client() as http:
        tokens = login(running, http)
        sid = running.broker.keys.verify(tokens["refresh_token"], use="rt", typ="rt+jwt")["sid"]
        seen = set()
        for _ in range(3):
            clock.advance(550)
            fresh = running.refresh(http, tokens["refresh_token"]).json()
            tokens = fresh
            response = shotgrid_token(http, tokens["access_token"])
            assert response.status_code == 200, response.text
            seen.add(response.json()["access_token"])
        assert len(seen) == 3
        record = running.broker.store.get_upstream_tokens(f"session:{sid}")
        assert record is not None and record.version == 4
        assert response.json()["access_token"].encode() not in record.access_token


def test_upstream_refresh_token_revoked_upstream_is_invalid_grant(
    env: Env, clock: MovableClock, strategy: str
) -> None:
    running, emu, _site = env
    if strategy != "custody":
        pytest.skip("custody only: sudo keeps no user token")
    with running.client() as http:
        tokens = login(running, http)
        emu.revoke_user_tokens("alice")
        clock.advance(601)  # the kept ShotGrid access token has expired
        # A fresh subject token (the broker session itself is still fine).
        refreshed = running.refresh(http, tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        response = shotgrid_token(http, refreshed.json()["access_token"])
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_grant"
    assert "sign in again" in body["error_description"]


def test_no_kept_token_is_invalid_grant(env: Env, strategy: str) -> None:
    running, _emu, _site = env
    if strategy != "custody":
        pytest.skip("custody only")
    with running.client() as http:
        tokens = login(running, http)
        sid = running.broker.keys.verify(tokens["refresh_token"], use="rt", typ="rt+jwt")["sid"]
        running.broker.store.delete_upstream_tokens(f"session:{sid}")
        response = shotgrid_token(http, tokens["access_token"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_deactivated_user_is_invalid_grant(env: Env, strategy: str) -> None:
    running, emu, _site = env
    if strategy != "sudo":
        pytest.skip("sudo only: custody reuses the kept token until it expires")
    with running.client() as http:
        subject = login(running, http)["access_token"]
        emu.set_active("alice", False)
        response = shotgrid_token(http, subject)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_shotgrid_down_is_503(env: Env, clock: MovableClock, strategy: str) -> None:
    running, emu, _site = env
    with running.client() as http:
        subject = login(running, http)["access_token"]
        if strategy == "custody":
            clock.advance(550)
        emu.faults.set("token", status=503)
        response = shotgrid_token(http, subject)
        emu.faults.clear()
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "temporarily_unavailable"
        assert "retry-after" in response.headers
        # Nothing was lost: the next attempt succeeds.
        retry = shotgrid_token(http, subject)
        assert retry.status_code == 200, retry.text
