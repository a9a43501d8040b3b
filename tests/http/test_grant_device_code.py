"""The device authorization grant (RFC 8628) at `/device_authorization` and `/token`: the
codes, every poll answer (`authorization_pending`, `slow_down` with its +5 s, `access_denied`,
`expired_token`), single use, the tokens and the device's session, refusals by `error`.
A real broker and the emulator under uvicorn; the clock is moved, never waited for."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from broker.store import ClientRecord
from broker.tokens.device import device_code_hash, normalize_user_code, user_code_hash
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.device import DEVICE_GRANT, approve, authorize_device, poll
from tests.support.oidc import Flow, login_code

USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningBroker, MovableClock]]:
    clock = MovableClock()
    tmp = tmp_path_factory.mktemp("device-grant")
    with broker_with_emulator(tmp, clock) as (running, _emu, _site):
        running.broker.store.put_client(
            ClientRecord(client_id="device-no-refresh", grant_types=(DEVICE_GRANT,))
        )
        yield running, clock


@pytest.fixture
def running(env: tuple[RunningBroker, MovableClock]) -> RunningBroker:
    return env[0]


@pytest.fixture
def clock(env: tuple[RunningBroker, MovableClock]) -> MovableClock:
    return env[1]


@pytest.fixture
def http(running: RunningBroker) -> Iterator[httpx.Client]:
    with running.client() as client:
        yield client


def test_device_authorization_response(http: httpx.Client, running: RunningBroker) -> None:
    response = http.post("/device_authorization", data={"client_id": "dna-cli", "scope": "openid"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert USER_CODE.match(body["user_code"])
    assert body["verification_uri"] == running.url + "/device"
    assert body["verification_uri_complete"] == (
        f"{running.url}/device?user_code={body['user_code']}"
    )
    assert body["expires_in"] == 600 and body["interval"] == 5
    assert len(body["device_code"]) >= 40
    # Stored hashed: neither code is in the database in clear.
    store = running.broker.store
    record = store.get_device_code(device_code_hash(body["device_code"]))
    assert record is not None and record.scope == "openid" and record.status == "pending"
    canonical = normalize_user_code(body["user_code"])
    assert canonical is not None
    assert store.get_device_code_by_user_code(user_code_hash(canonical)) == record
    raw = b"".join(p.read_bytes() for p in Path(store.path).parent.glob("broker.db*"))
    assert body["device_code"].encode() not in raw
    assert canonical.encode() not in raw and body["user_code"].encode() not in raw


def test_discovery_names_the_endpoint_and_the_grant(
    http: httpx.Client, running: RunningBroker
) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        meta = http.get(path).json()
        assert meta["device_authorization_endpoint"] == running.url + "/device_authorization"
        assert DEVICE_GRANT in meta["grant_types_supported"]


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        ({"client_id": "dna-frontend"}, 400, "unauthorized_client"),
        ({"client_id": "nobody"}, 401, "invalid_client"),
        ({"scope": "openid"}, 401, "invalid_client"),
        ({"client_id": "dna-cli", "scope": "openid admin"}, 400, "invalid_scope"),
        ("client_id=dna-cli&client_id=dna-cli", 400, "invalid_request"),
    ],
)
def test_device_authorization_refusals(
    http: httpx.Client, data: dict[str, str] | str, status: int, error: str
) -> None:
    if isinstance(data, str):
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        response = http.post("/device_authorization", content=data, headers=form)
    else:
        response = http.post("/device_authorization", data=data)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


def test_pending_then_slow_down_adds_five_seconds(
    http: httpx.Client, running: RunningBroker, clock: MovableClock
) -> None:
    device = authorize_device(http)
    key = device_code_hash(device["device_code"])
    assert poll(http, device["device_code"]).json()["error"] == "authorization_pending"
    too_fast = poll(http, device["device_code"])
    assert too_fast.status_code == 400 and too_fast.json()["error"] == "slow_down"
    assert running.broker.store.get_device_code(key).interval == 10  # type: ignore[union-attr]
    clock.advance(9)  # 9 s after the last poll: still too fast for 10 s
    assert poll(http, device["device_code"]).json()["error"] == "slow_down"
    assert running.broker.store.get_device_code(key).interval == 15  # type: ignore[union-attr]
    clock.advance(15)
    assert poll(http, device["device_code"]).json()["error"] == "authorization_pending"
    assert running.broker.store.get_device_code(key).interval == 15  # type: ignore[union-attr]


def test_concurrent_polls_are_paced_across_requests(
    running: RunningBroker, clock: MovableClock
) -> None:
    """Polls at one instant from several connections: one is pending, the rest slow_down
    (the pace lives in the store, not in one process)."""
    with running.client() as http:
        device = authorize_device(http)
    barrier = threading.Barrier(6)
    answers: list[str] = []

    def one() -> None:
        with running.client() as client:
            barrier.wait(timeout=10)
            answers.append(poll(client, device["device_code"]).json()["error"])

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == ["authorization_pending"] + ["slow_down"] * 5


def test_approved_tokens_and_the_device_session(
    http: httpx.Client, running: RunningBroker, clock: MovableClock
) -> None:
    device = authorize_device(http, scope="openid profile email offline_access")
    with running.client() as browser:
        assert approve(browser, device["user_code"]).status_code == 200
    clock.advance(5)
    with httpx.Client(
        base_url=running.url, headers={"User-Agent": "nuke-plugin/2.1"}, timeout=10
    ) as device_http:
        response = poll(device_http, device["device_code"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["refresh_token"] and body["id_token"]
    assert body["scope"] == "openid profile email offline_access"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "101" and claims["client_id"] == "dna-cli"
    assert claims["sg_login"] == "alice"
    id_claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert id_claims["aud"] == "dna-cli" and id_claims["sub"] == "101"
    session = running.broker.store.get_session(claims["sid"])
    assert session is not None
    assert session.auth_method == "device"
    assert session.user_agent == "nuke-plugin/2.1" and session.client_ip == "127.0.0.1"
    approver = running.broker.store.get_session(session.upstream_sid)
    assert approver is not None and approver.auth_method == "password"
    assert approver.sid != session.sid and approver.auth_time == session.auth_time
    # Single use.
    clock.advance(5)
    again = poll(http, device["device_code"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # The device refreshes like any other client.
    refreshed = running.refresh(http, body["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text


def test_a_client_without_refresh_gets_no_refresh_token(
    http: httpx.Client, running: RunningBroker, clock: MovableClock
) -> None:
    device = authorize_device(http, client_id="device-no-refresh")
    with running.client() as browser:
        approve(browser, device["user_code"])
    clock.advance(5)
    body = poll(http, device["device_code"], client_id="device-no-refresh").json()
    assert body["access_token"] and "refresh_token" not in body and "id_token" not in body


def test_denied(http: httpx.Client, running: RunningBroker, clock: MovableClock) -> None:
    device = authorize_device(http)
    with running.client() as browser:
        assert approve(browser, device["user_code"], action="deny").status_code == 200
    clock.advance(5)
    response = poll(http, device["device_code"])
    assert response.status_code == 400 and response.json()["error"] == "access_denied"


def test_expired(http: httpx.Client, running: RunningBroker, clock: MovableClock) -> None:
    device = authorize_device(http)
    clock.advance(600)
    response = poll(http, device["device_code"])
    assert response.status_code == 400 and response.json()["error"] == "expired_token"
    # Once purged (an hour later), the code is simply unknown.
    clock.advance(2 * 3600)
    running.broker.store.gc(running.broker.now())
    assert poll(http, device["device_code"]).json()["error"] == "invalid_grant"


def test_approval_whose_browser_session_ended_is_refused(
    http: httpx.Client, running: RunningBroker, clock: MovableClock
) -> None:
    device = authorize_device(http)
    with running.client() as browser:
        approve(browser, device["user_code"])
    record = running.broker.store.get_device_code(device_code_hash(device["device_code"]))
    assert record is not None and record.sid
    running.broker.sessions.end_session(record.sid, "logout")
    clock.advance(5)
    assert poll(http, device["device_code"]).json()["error"] == "access_denied"


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("unknown", "invalid_grant"),
        ("missing", "invalid_request"),
        ("other client", "invalid_grant"),
        ("client without the grant", "unauthorized_client"),
        ("huge", "invalid_grant"),
    ],
)
def test_token_refusals(http: httpx.Client, case: str, error: str) -> None:
    device = authorize_device(http)
    data = {
        "grant_type": DEVICE_GRANT,
        "client_id": "dna-cli",
        "device_code": device["device_code"],
    }
    if case == "unknown":
        data["device_code"] = "not-a-device-code"
    elif case == "missing":
        del data["device_code"]
    elif case == "other client":
        data["client_id"] = "device-no-refresh"
    elif case == "client without the grant":
        data["client_id"] = "dna-frontend"
    elif case == "huge":
        data["device_code"] = "x" * 5000
    response = http.post("/token", data=data)
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == error


def test_password_grant_points_two_factor_accounts_to_the_device_flow(
    http: httpx.Client, running: RunningBroker
) -> None:
    response = running.password_grant(http, "dave")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_grant" and "token-broker login" in body["error_description"]


def test_an_sso_session_approves_without_signing_in_again(
    http: httpx.Client, running: RunningBroker, clock: MovableClock
) -> None:
    """A browser that signed in for a web app goes straight to the approval form."""
    device = authorize_device(http)
    with running.client() as browser:
        login_code(browser, Flow())
        page = browser.get("/device", params={"user_code": device["user_code"]})
        assert 'name="password"' not in page.text and 'value="approve"' in page.text
