"""The token service end to end: real uvicorn broker, real SQLite file, the ShotGrid
emulator upstream over HTTP, tokens checked with PyJWT's PyJWKClient from `jwks_uri`."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from shotgrid_emulator import ShotGridEmulator
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.services import broker, clock, env, http

__all__ = ["broker", "clock", "env", "http"]  # fixtures shared with the service tests

pytestmark = pytest.mark.timeout(60)


def verify_access_token(broker: RunningBroker, token: str, clock: MovableClock) -> dict[str, Any]:
    meta = httpx.get(f"{broker.url}/.well-known/openid-configuration").json()
    jwks = jwt.PyJWKClient(meta["jwks_uri"])
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    key = jwks.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience="dna-api",
        issuer=broker.url,
        options={"require": ["exp", "iat", "jti", "sub", "iss", "aud"], "verify_iat": False},
        leeway=0,
    )
    return claims


def test_password_grant_for_alice_verifies_offline(
    broker: RunningBroker, http: httpx.Client, clock: MovableClock
) -> None:
    response = broker.password_grant(http)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert body["refresh_token"]
    # PyJWT checks exp against the wall clock; the test clock starts at wall time.
    claims = verify_access_token(broker, body["access_token"], clock)
    assert claims["iss"] == broker.url
    assert claims["sub"] == "101"
    assert claims["aud"] == "dna-api"
    assert claims["exp"] - claims["iat"] == 600
    assert claims["client_id"] == "dna-cli"
    assert claims["email"] == "alice@example.com"
    assert claims["name"] == "Alice Artist"
    assert claims["sg_login"] == "alice"
    assert claims["sg_user_id"] == 101
    assert isinstance(claims["sid"], str) and claims["sid"]
    assert isinstance(claims["auth_time"], int)
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert "scope" in claims


def test_refresh_token_is_not_an_access_token(broker: RunningBroker, http: httpx.Client) -> None:
    body = broker.password_grant(http).json()
    refresh = body["refresh_token"]
    header = jwt.get_unverified_header(refresh)
    assert header["typ"] == "rt+jwt"
    claims = jwt.decode(refresh, options={"verify_signature": False})
    assert claims["aud"] == broker.url
    jwks = jwt.PyJWKClient(f"{broker.url}/jwks.json")
    with pytest.raises(jwt.PyJWKClientError):
        jwks.get_signing_key_from_jwt(refresh)


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"username": "alice", "password": "wrong"}, 400, "invalid_grant"),
        ({"username": "carol", "password": "carol-pw"}, 400, "invalid_grant"),
        ({"username": "dave", "password": "dave-pw"}, 400, "invalid_grant"),
        ({"username": "erin", "password": "erin-pw"}, 400, "invalid_grant"),
        ({"username": "nobody", "password": "x"}, 400, "invalid_grant"),
        ({"username": "alice"}, 400, "invalid_request"),
        ({"password": "alice-pw"}, 400, "invalid_request"),
        (
            {"username": "alice", "password": "alice-pw", "client_id": "dna-frontend"},
            400,
            "unauthorized_client",
        ),
        ({"username": "alice", "password": "alice-pw", "client_id": "nope"}, 400, "invalid_client"),
        ({"username": "alice", "password": "alice-pw", "client_id": ""}, 401, "invalid_client"),
        ({"username": "alice", "password": "alice-pw", "scope": "admin"}, 400, "invalid_scope"),
        (
            {"username": "alice", "password": "alice-pw", "grant_type": "magic"},
            400,
            "unsupported_grant_type",
        ),
    ],
)
def test_password_grant_refusals(
    broker: RunningBroker, http: httpx.Client, form: dict[str, str], status: int, error: str
) -> None:
    data = {"grant_type": "password", "client_id": "dna-cli", **form}
    response = http.post("/token", data=data)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"
    if "password" in form:
        assert form["password"] not in response.text


def test_refusal_descriptions_tell_the_user_what_to_do(
    broker: RunningBroker, http: httpx.Client
) -> None:
    texts = {
        user: broker.password_grant(http, user).json()["error_description"]
        for user in ("carol", "dave", "erin")
    }
    wrong = broker.password_grant(http, "alice", "bad").json()["error_description"]
    assert "Personal Access Token" in wrong
    assert "disabled" in texts["carol"]
    assert "two-factor" in texts["dave"]
    assert "single sign-on" in texts["erin"]
    unknown = broker.password_grant(http, "nobody", "bad").json()["error_description"]
    assert unknown == wrong  # unknown user and wrong password look identical


def test_malformed_requests_are_rfc_errors_not_500(http: httpx.Client) -> None:
    cases = [
        http.post("/token", json={"grant_type": "password"}),
        http.post(
            "/token",
            content=b"grant_type=password&grant_type=password",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        http.post(
            "/token",
            content=b"\xff\xfe",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        http.post(
            "/token",
            content=b"a=" + b"x" * 70000,
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
    ]
    for response in cases:
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["error"] == "invalid_request"


def test_refresh_rotates_and_grace_returns_same_successor(
    broker: RunningBroker, http: httpx.Client, clock: MovableClock
) -> None:
    first = broker.password_grant(http).json()["refresh_token"]
    r1 = broker.refresh(http, first)
    assert r1.status_code == 200, r1.text
    successor = r1.json()["refresh_token"]
    assert successor != first
    clock.advance(2)  # within the 5 s grace
    r2 = broker.refresh(http, first)
    assert r2.status_code == 200, r2.text
    assert r2.json()["refresh_token"] == successor
    assert r2.json()["access_token"] != r1.json()["access_token"]
    # the successor works and rotates on
    r3 = broker.refresh(http, successor)
    assert r3.status_code == 200
    assert r3.json()["refresh_token"] not in (first, successor)


def test_reuse_after_grace_revokes_the_family(
    broker: RunningBroker, http: httpx.Client, clock: MovableClock
) -> None:
    first = broker.password_grant(http).json()["refresh_token"]
    successor = broker.refresh(http, first).json()["refresh_token"]
    clock.advance(6)
    reuse = broker.refresh(http, first)
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    after = broker.refresh(http, successor)
    assert after.status_code == 400
    assert after.json()["error"] == "invalid_grant"


def test_twenty_concurrent_refreshes_get_one_successor(
    broker: RunningBroker, http: httpx.Client
) -> None:
    token = broker.password_grant(http).json()["refresh_token"]

    def use(_: int) -> httpx.Response:
        with broker.client() as c:
            return broker.refresh(c, token)

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(use, range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    successors = {r.json()["refresh_token"] for r in responses}
    assert len(successors) == 1


def test_refresh_by_another_client_is_refused(broker: RunningBroker, http: httpx.Client) -> None:
    token = broker.password_grant(http).json()["refresh_token"]
    response = broker.refresh(http, token, client_id="dna-frontend")
    assert response.json()["error"] == "invalid_grant"
    # and the rightful client can still use it
    assert broker.refresh(http, token).status_code == 200


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 9000])
def test_garbage_refresh_tokens(broker: RunningBroker, http: httpx.Client, token: str) -> None:
    response = broker.refresh(http, token)
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_grant", "invalid_request")


def test_refresh_scope_can_narrow_but_not_widen(broker: RunningBroker, http: httpx.Client) -> None:
    token = broker.password_grant(http, scope="profile email").json()["refresh_token"]
    wide = broker.refresh(http, token, scope="profile email openid")
    assert wide.json()["error"] == "invalid_scope"
    narrow = broker.refresh(http, token, scope="email")
    assert narrow.status_code == 200
    assert narrow.json()["scope"] == "email"


def test_idle_expiry(broker: RunningBroker, http: httpx.Client, clock: MovableClock) -> None:
    token = broker.password_grant(http).json()["refresh_token"]
    clock.advance(7 * 86400 + 1)
    response = broker.refresh(http, token)
    assert response.json()["error"] == "invalid_grant"


def test_absolute_expiry(broker: RunningBroker, http: httpx.Client, clock: MovableClock) -> None:
    token = broker.password_grant(http).json()["refresh_token"]
    # keep it alive past the idle window, refreshing every 6 days, until 30 days have passed
    for _ in range(4):  # day 24
        clock.advance(6 * 86400)
        emu_ok = broker.refresh(http, token)
        assert emu_ok.status_code == 200, emu_ok.text
        token = emu_ok.json()["refresh_token"]
    clock.advance(6 * 86400 + 1)  # just past day 30, though used within the idle window
    response = broker.refresh(http, token)
    assert response.json()["error"] == "invalid_grant"


def test_shotgrid_down_during_login_is_503(
    env: tuple[RunningBroker, ShotGridEmulator], http: httpx.Client
) -> None:
    broker, emu = env
    emu.faults.set("/api/v1/auth/access_token", status=503)
    response = broker.password_grant(http)
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    emu.faults.clear()
    emu.faults.set("/api/v1/auth/access_token", drop=True)
    response = broker.password_grant(http)
    assert response.status_code == 503


def test_shotgrid_down_during_refresh_within_and_past_staleness(
    env: tuple[RunningBroker, ShotGridEmulator], http: httpx.Client, clock: MovableClock
) -> None:
    broker, emu = env
    token = broker.password_grant(http).json()["refresh_token"]
    emu.faults.set("/api", status=503)
    clock.advance(900 + 60)  # recheck due, ShotGrid down, within the 3600 s bound
    ok = broker.refresh(http, token)
    assert ok.status_code == 200, ok.text
    token = ok.json()["refresh_token"]
    clock.advance(3600)  # now overdue by more than the bound
    down = broker.refresh(http, token)
    assert down.status_code == 503
    assert down.json()["error"] == "temporarily_unavailable"
    emu.faults.clear()
    # nothing was consumed: the same token works once ShotGrid is back
    assert broker.refresh(http, token).status_code == 200


def test_user_deactivated_upstream_loses_family_at_next_recheck(
    env: tuple[RunningBroker, ShotGridEmulator], http: httpx.Client, clock: MovableClock
) -> None:
    broker, emu = env
    token = broker.password_grant(http).json()["refresh_token"]
    emu.set_active("alice", False)
    clock.advance(60)  # before the recheck interval: still fine
    r = broker.refresh(http, token)
    assert r.status_code == 200
    token = r.json()["refresh_token"]
    clock.advance(900)
    r = broker.refresh(http, token)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_grant"
    emu.set_active("alice", True)
    assert broker.refresh(http, token).json()["error"] == "invalid_grant"


def test_key_rotation_with_tokens_in_flight(broker: RunningBroker, http: httpx.Client) -> None:
    old = broker.password_grant(http).json()
    old_kid = jwt.get_unverified_header(old["access_token"])["kid"]
    keys = broker.broker.keys
    new_current, _ = keys.rotate("RS256")
    assert new_current != old_kid
    new = broker.password_grant(http).json()
    assert jwt.get_unverified_header(new["access_token"])["kid"] == new_current
    published = {k["kid"] for k in http.get("/jwks.json").json()["keys"]}
    assert {old_kid, new_current} <= published
    jwks = jwt.PyJWKClient(f"{broker.url}/jwks.json")
    for token in (old["access_token"], new["access_token"]):
        key = jwks.get_signing_key_from_jwt(token)
        jwt.decode(token, key.key, algorithms=["RS256"], audience="dna-api")
    # refresh tokens issued before the rotation still refresh
    assert broker.refresh(http, old["refresh_token"]).status_code == 200


def test_discovery_and_jwks(broker: RunningBroker, http: httpx.Client) -> None:
    meta = http.get("/.well-known/openid-configuration").json()
    assert meta["issuer"] == broker.url
    assert meta["token_endpoint"] == f"{broker.url}/token"
    assert "password" in meta["grant_types_supported"]
    assert meta == http.get("/.well-known/oauth-authorization-server").json()
    response = http.get("/jwks.json")
    max_age = int(response.headers["cache-control"].split("max-age=")[1])
    assert 0 < max_age <= broker.settings.jwks_max_age
    for key in response.json()["keys"]:
        assert "d" not in key and "p" not in key
        assert key["use"] == "sig"


def test_custody_without_script_rechecks_with_the_users_own_token(
    tmp_path: Path, clock: MovableClock
) -> None:
    """No script key: the recheck refreshes the kept ShotGrid token and reads the user
    with it; a deactivated user, or a ShotGrid sign-in revoked upstream, ends the family."""
    with (
        broker_with_emulator(
            tmp_path,
            clock,
            upstream_strategy="custody",
            shotgrid_script_name=None,
            shotgrid_script_key=None,
        ) as (running, emu, _site),
        running.client() as http,
    ):
        token = running.password_grant(http).json()["refresh_token"]
        clock.advance(901)  # recheck due; the kept upstream access token (600 s) expired
        ok = running.refresh(http, token)
        assert ok.status_code == 200, ok.text
        assert emu.calls["token:refresh_token"] == 1  # refreshed upstream, then read
        token = ok.json()["refresh_token"]
        emu.set_active("alice", False)
        clock.advance(901)
        gone = running.refresh(http, token)
        assert gone.json()["error"] == "invalid_grant"

        bob = running.password_grant(http, "bob").json()["refresh_token"]
        emu.revoke_user_tokens("bob")
        clock.advance(901)
        rejected = running.refresh(http, bob)
        assert rejected.json()["error"] == "invalid_grant"
