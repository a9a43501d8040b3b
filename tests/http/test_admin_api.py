"""The admin API (`/admin/api/...`) through real HTTP: a real broker (uvicorn, SQLite, the
emulated ShotGrid), a `broker-admin` token from the client credentials grant, and people
signing in from their own addresses (127.0.0.2, 127.0.0.3) with the password grant and
the login page. Every refusal is an RFC 7807 problem."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.flaky_store import FlakyStore, broker_on_flaky_store
from tests.support.oidc import Flow, clock, http, login_code, running

pytestmark = pytest.mark.timeout(60)

PROBLEM = "application/problem+json"
ADMIN = ("broker-admin", "broker-admin-secret")


__all__ = ["clock", "http", "running"]  # the shared fixtures, used by name


def client_from(running: RunningBroker, address: str, agent: str) -> httpx.Client:
    """A person at their own address with their own User-Agent."""
    return httpx.Client(
        base_url=running.url,
        transport=httpx.HTTPTransport(local_address=address),
        headers={"User-Agent": agent},
        timeout=10,
    )


def token_for(http: httpx.Client, auth: tuple[str, str] = ADMIN, **form: str) -> str:
    response = http.post("/token", data={"grant_type": "client_credentials", **form}, auth=auth)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def admin_token(http: httpx.Client) -> str:
    return token_for(http, scope="admin")


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


class Api:
    """The admin API with a token."""

    def __init__(self, http: httpx.Client, token: str) -> None:
        self.http, self.token = http, token

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return self.http.request(method, "/admin/api" + path, headers=headers, **kw)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        response = self.call(method, path, **kw)
        assert response.status_code == status, response.text
        assert response.headers["cache-control"] == "no-store"
        return response.json() if response.content else None


@pytest.fixture
def api(http: httpx.Client) -> Api:
    return Api(http, admin_token(http))


def assert_problem(
    response: httpx.Response, status: int, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:shotgrid-token-broker:problem:")
    assert body["title"] and body["detail"]
    assert body.get("field") == field
    return body


def password_login(running: RunningBroker, address: str, agent: str) -> dict[str, Any]:
    with client_from(running, address, agent) as person:
        response = running.password_grant(person, "alice")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def page_login(running: RunningBroker, address: str, agent: str) -> dict[str, Any]:
    flow = Flow()
    with client_from(running, address, agent) as browser:
        code = login_code(browser, flow, "alice")
        response = flow.redeem(browser, code)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def sid_of(tokens: dict[str, Any]) -> str:
    sid: str = claims_of(tokens["access_token"])["sid"]
    return sid


# --- the admin token ---------------------------------------------------------------------------
def test_admin_token_is_for_the_admin_api_only(running: RunningBroker, http: httpx.Client) -> None:
    claims = claims_of(admin_token(http))
    assert claims["scope"] == "admin" and claims["sub"] == "broker-admin"
    assert claims["aud"] == f"{running.url}/admin/api"
    assert "sid" not in claims
    # Asking for it with another audience is refused.
    response = http.post(
        "/token",
        data={"grant_type": "client_credentials", "scope": "admin", "audience": "dna-api"},
        auth=ADMIN,
    )
    assert response.json()["error"] == "invalid_target"
    # No right, no scope: not for a person's grant, nor for a service without the right.
    assert running.password_grant(http, "alice", scope="admin").json()["error"] == "invalid_scope"
    frank = running.password_grant(http, "frank", scope="openid admin")
    assert frank.json()["error"] == "invalid_scope"
    backend = http.post(
        "/token",
        data={"grant_type": "client_credentials", "scope": "admin"},
        auth=("dna-backend", "dna-backend-secret"),
    )
    assert backend.json()["error"] == "invalid_scope"
    # Discovery lists every scope the broker serves, the admin one included.
    meta = http.get("/.well-known/openid-configuration").json()
    assert meta["scopes_supported"] == ["openid", "profile", "email", "offline_access", "admin"]


def test_a_person_never_gets_admin_even_from_an_admin_client(
    running: RunningBroker, api: Api, http: httpx.Client
) -> None:
    created = api.ok(
        "POST",
        "/clients",
        201,
        json={
            "client_id": "hybrid",
            "confidential": True,
            "grant_types": ["password", "client_credentials"],
            "admin": True,
        },
    )
    auth = ("hybrid", created["client_secret"])
    person = http.post(
        "/token",
        data={
            "grant_type": "password",
            "username": "frank",
            "password": "frank-pw",
            "scope": "admin",
        },
        auth=auth,
    )
    assert person.status_code == 400 and person.json()["error"] == "invalid_scope"
    plain = http.post(
        "/token",
        data={"grant_type": "password", "username": "frank", "password": "frank-pw"},
        auth=auth,
    )
    assert "admin" not in plain.json()["scope"].split()
    assert claims_of(token_for(http, auth, scope="admin"))["scope"] == "admin"


def test_only_the_clients_own_admin_api_token_passes(
    running: RunningBroker, http: httpx.Client
) -> None:
    """Tokens the broker signed with `admin` but for another audience, for a person, or
    on someone's behalf are refused (none is issued today: this holds the check)."""
    minter = running.broker.minter
    other_audience = minter.access_token(None, "broker-admin", "admin").token
    assert_problem(Api(http, other_audience).call("GET", "/keys"), 401)
    target = f"{running.url}/admin/api"
    delegated = minter.access_token(
        None, "broker-admin", "admin", audience=target, act={"sub": "dna-backend"}
    ).token
    assert_problem(Api(http, delegated).call("GET", "/keys"), 401)
    tokens = running.password_grant(http, "frank")
    session = running.broker.store.get_session(sid_of(tokens.json()))
    for_a_person = minter.access_token(session, "broker-admin", "admin", audience=target).token
    assert_problem(Api(http, for_a_person).call("GET", "/keys"), 401)
    own = minter.access_token(None, "broker-admin", "admin", audience=target).token
    assert Api(http, own).ok("GET", "/keys")["keys"]


# --- sessions ----------------------------------------------------------------------------------
def test_sessions_of_a_person_after_two_sign_ins(
    running: RunningBroker, api: Api, clock: MovableClock
) -> None:
    cli = password_login(running, "127.0.0.2", "dna-cli/1.0")
    clock.advance(60)
    browser = page_login(running, "127.0.0.3", "Mozilla/5.0 (test)")
    body = api.ok("GET", "/users/alice/sessions")
    assert body["login"] == "alice"
    sessions = body["sessions"]
    assert [s["sid"] for s in sessions] == [sid_of(browser), sid_of(cli)]  # newest first
    page, grant = sessions
    assert grant["clients"] == ["dna-cli"] and page["clients"] == ["dna-frontend"]
    assert grant["auth_method"] == page["auth_method"] == "password"
    assert (grant["client_ip"], grant["user_agent"]) == ("127.0.0.2", "dna-cli/1.0")
    assert (page["client_ip"], page["user_agent"]) == ("127.0.0.3", "Mozilla/5.0 (test)")
    assert grant["user_id"] == 101 and grant["login"] == "alice"
    assert grant["created_at"] == grant["last_used_at"]
    assert page["created_at"] > grant["created_at"]
    # A refresh moves "last used" on, without any write of its own.
    clock.advance(120)
    with client_from(running, "127.0.0.2", "dna-cli/1.0") as person:
        refreshed = running.refresh(person, cli["refresh_token"])
    assert refreshed.status_code == 200
    later = api.ok("GET", "/users/alice/sessions")["sessions"]
    grant_later = next(s for s in later if s["sid"] == sid_of(cli))
    assert grant_later["last_used_at"] > grant["last_used_at"]
    assert grant_later["created_at"] == grant["created_at"]


def test_end_one_session(running: RunningBroker, api: Api, http: httpx.Client) -> None:
    first = password_login(running, "127.0.0.2", "a")
    second = password_login(running, "127.0.0.3", "b")
    response = api.call("DELETE", f"/sessions/{sid_of(first)}")
    assert response.status_code == 204 and not response.content
    ended = running.refresh(http, first["refresh_token"])
    assert ended.status_code == 400 and ended.json()["error"] == "invalid_grant"
    introspected = http.post(
        "/introspect",
        data={"token": first["access_token"]},
        auth=("dna-backend", "dna-backend-secret"),
    )
    assert introspected.json() == {"active": False}
    assert running.refresh(http, second["refresh_token"]).status_code == 200
    left = api.ok("GET", "/users/alice/sessions")["sessions"]
    assert [s["sid"] for s in left] == [sid_of(second)]
    assert_problem(api.call("DELETE", f"/sessions/{sid_of(first)}"), 404)
    assert_problem(api.call("DELETE", "/sessions/no-such-sid"), 404)
    events = api.ok("GET", "/audit", params={"event": "admin"})["events"]
    assert events[0]["action"] == "session_end" and events[0]["outcome"] == "not_found"
    done = next(e for e in events if e["outcome"] == "success")
    assert done["sid"] == sid_of(first) and done["login"] == "alice"
    assert done["admin"] == "client:broker-admin"


def test_end_every_session_of_a_person(
    running: RunningBroker, api: Api, http: httpx.Client
) -> None:
    signed_in = [password_login(running, "127.0.0.2", "a"), page_login(running, "127.0.0.3", "b")]
    body = api.ok("DELETE", "/users/alice/sessions")
    assert sorted(body["ended"]) == sorted(sid_of(t) for t in signed_in)
    for tokens in signed_in:
        assert (
            running.refresh(
                http,
                tokens["refresh_token"],
                client_id=claims_of(tokens["access_token"])["client_id"],
            ).json()["error"]
            == "invalid_grant"
        )
    assert api.ok("GET", "/users/alice/sessions")["sessions"] == []
    assert api.ok("DELETE", "/users/alice/sessions")["ended"] == []


def test_unknown_people_are_404_and_known_ones_without_sessions_are_empty(api: Api) -> None:
    assert api.ok("GET", "/users/bob/sessions") == {"login": "bob", "sessions": []}
    for method, path in [
        ("GET", "/users/ghost/sessions"),
        ("DELETE", "/users/ghost/sessions"),
        ("POST", "/users/ghost/unlock"),
    ]:
        assert_problem(api.call(method, path), 404)


def test_unlock_after_five_failures(running: RunningBroker, api: Api) -> None:
    with client_from(running, "127.0.0.2", "script") as person:
        for _ in range(5):
            wrong = running.password_grant(person, "alice", "wrong")
            assert wrong.json()["error"] == "invalid_grant"
        assert running.password_grant(person, "alice").status_code == 429
        response = api.call("POST", "/users/alice/unlock")
        assert response.status_code == 204
        assert running.password_grant(person, "alice").status_code == 200
    assert any(
        e["action"] == "user_unlock" and e["outcome"] == "success"
        for e in api.ok("GET", "/audit", params={"login": "alice", "event": "admin"})["events"]
    )


# --- clients -----------------------------------------------------------------------------------
def test_client_crud(api: Api, http: httpx.Client) -> None:
    created = api.ok(
        "POST",
        "/clients",
        201,
        json={
            "client_id": "render-farm",
            "confidential": True,
            "name": "Render farm",
            "grant_types": ["client_credentials"],
        },
    )
    secret = created.pop("client_secret")
    assert created["client_id"] == "render-farm" and created["confidential"] is True
    assert created["admin"] is False and "secret_hash" not in created
    # The secret shown once works at once (the cached registration was forgotten).
    assert token_for(http, ("render-farm", secret))
    assert api.ok("GET", "/clients/render-farm") == created
    listed = api.ok("GET", "/clients")["clients"]
    assert "render-farm" in [c["client_id"] for c in listed]
    assert all("client_secret" not in c and "secret_hash" not in c for c in listed)
    changed = api.ok(
        "PATCH",
        "/clients/render-farm",
        json={"audiences": ["review-api"], "may_introspect": True},
    )
    assert changed["audiences"] == ["review-api"] and changed["may_introspect"] is True
    assert changed["grant_types"] == ["client_credentials"]
    response = api.call("DELETE", "/clients/render-farm")
    assert response.status_code == 204
    assert_problem(api.call("GET", "/clients/render-farm"), 404)
    assert_problem(api.call("DELETE", "/clients/render-farm"), 404)
    assert_problem(api.call("PATCH", "/clients/render-farm", json={"may_introspect": False}), 404)
    refused = http.post(
        "/token", data={"grant_type": "client_credentials"}, auth=("render-farm", secret)
    )
    assert refused.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"client_id": "x", "grant_types": ["implicit"]}, "grant_types"),
        ({"client_id": "x", "grant_types": []}, "grant_types"),
        ({"client_id": "x", "grant_types": ["client_credentials"]}, "grant_types"),  # public
        ({"client_id": "x", "grant_types": "password"}, "grant_types"),
        ({"client_id": "x", "grant_types": ["authorization_code"]}, "redirect_uris"),
        ({"client_id": "has space", "grant_types": ["password"]}, "client_id"),
        ({"client_id": 7, "grant_types": ["password"]}, "client_id"),
        ({"grant_types": ["password"]}, "client_id"),
        ({"client_id": "x", "grant_types": ["password"], "confidential": "yes"}, "confidential"),
        ({"client_id": "x", "grant_types": ["password"], "scopes": ["admin"]}, "scopes"),
        ({"client_id": "x", "grant_types": ["password"], "admin": True}, "scopes"),
        ({"client_id": "x", "grant_types": ["password"], "secret": "mine"}, "secret"),
        (
            {"client_id": "x", "grant_types": ["password"], "max_exchange_lifetime": 1.5},
            "max_exchange_lifetime",
        ),
    ],
)
def test_client_registration_errors_name_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    assert_problem(api.call("POST", "/clients", json=body), 400, field)
    assert_problem(api.call("GET", "/clients/x"), 404)


def test_registration_rules_are_the_shared_policy(api: Api) -> None:
    """The rules of broker/client_policy.py, with their RFC 7591 §3.2.2 error codes."""
    plain_http = {
        "client_id": "web",
        "grant_types": ["authorization_code"],
        "redirect_uris": ["http://evil.example.com/cb"],
    }
    body = assert_problem(api.call("POST", "/clients", json=plain_http), 400, "redirect_uris")
    assert body["error"] == "invalid_redirect_uri"
    unknown_audience = {"client_id": "svc", "grant_types": ["password"], "audiences": ["billing"]}
    body = assert_problem(api.call("POST", "/clients", json=unknown_audience), 400, "audiences")
    assert body["error"] == "invalid_client_metadata"
    native = {
        "client_id": "native",
        "grant_types": ["authorization_code", "refresh_token"],
        "redirect_uris": ["com.example.app:/callback"],
    }
    assert api.ok("POST", "/clients", 201, json=native)["redirect_uris"] == [
        "com.example.app:/callback"
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"grant_types": ["nope"]}, "grant_types"),
        ({"grant_types": ["client_credentials"]}, "grant_types"),  # dna-cli is public
        ({"may_introspect": True}, "may_introspect"),
        ({"max_exchange_lifetime": -1}, "max_exchange_lifetime"),
        ({"redirect_uris": ["http://127.0.0.1/cb"]}, "redirect_uris"),
        ({"scopes": ["openid", 3]}, "scopes"),
        ({}, None),
    ],
)
def test_client_change_errors_name_the_field(
    api: Api, body: dict[str, Any], field: str | None
) -> None:
    before = api.ok("GET", "/clients/dna-cli")
    assert_problem(api.call("PATCH", "/clients/dna-cli", json=body), 400, field)
    assert api.ok("GET", "/clients/dna-cli") == before


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400),
        (b"client_id=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ],
)
def test_malformed_bodies(api: Api, content: bytes, headers: dict[str, str], status: int) -> None:
    assert_problem(api.call("POST", "/clients", content=content, headers=headers), status)


def test_an_existing_client_is_a_conflict(api: Api) -> None:
    body = {"client_id": "dna-cli", "grant_types": ["password"]}
    assert_problem(api.call("POST", "/clients", json=body), 409)


def test_the_last_admin_client_stays(api: Api, http: httpx.Client) -> None:
    assert_problem(api.call("DELETE", "/clients/broker-admin"), 409)
    assert_problem(api.call("PATCH", "/clients/broker-admin", json={"admin": False}), 409)
    assert api.ok("GET", "/clients/broker-admin")["admin"] is True
    second = api.ok(
        "POST",
        "/clients",
        201,
        json={
            "client_id": "ops-admin",
            "confidential": True,
            "grant_types": ["client_credentials"],
            "admin": True,
        },
    )
    assert second["admin"] is True and second["scopes"] == [
        "openid",
        "profile",
        "email",
        "offline_access",
    ]
    # Taking the right away works now that another client has it, and at once.
    assert api.ok("PATCH", "/clients/broker-admin", json={"admin": False})["admin"] is False
    assert_problem(api.call("GET", "/clients"), 403)
    ops = Api(http, token_for(http, ("ops-admin", second["client_secret"]), scope="admin"))
    assert ops.ok("PATCH", "/clients/broker-admin", json={"admin": True})["admin"] is True
    assert api.ok("GET", "/keys")["keys"]  # the same token, the right back
    assert api.call("DELETE", "/clients/broker-admin").status_code == 204
    # The removed client's token stops working at once; the other admin carries on.
    assert_problem(api.call("GET", "/clients"), 403)
    assert_problem(ops.call("DELETE", "/clients/ops-admin"), 409)
    assert [c["client_id"] for c in ops.ok("GET", "/clients")["clients"] if c["admin"]] == [
        "ops-admin"
    ]


# --- keys --------------------------------------------------------------------------------------
def test_keys_list_and_rotate(running: RunningBroker, api: Api, http: httpx.Client) -> None:
    keys = api.ok("GET", "/keys")["keys"]
    states = {k["kid"]: k["state"] for k in keys}
    assert sorted(states.values()) == ["current", "next"]
    assert all(k["alg"] == "RS256" for k in keys)
    current = next(k for k, s in states.items() if s == "current")
    upcoming = next(k for k, s in states.items() if s == "next")
    body = api.ok("POST", "/keys/rotate")
    assert body["rotated"][0]["alg"] == "RS256"
    assert body["rotated"][0]["signing_kid"] == upcoming
    after = {k["kid"]: k["state"] for k in api.ok("GET", "/keys")["keys"]}
    assert after[current] == "retired" and after[upcoming] == "current"
    assert after[body["rotated"][0]["next_kid"]] == "next"
    fresh = running.password_grant(http, "bob").json()["access_token"]
    header = json.loads(base64.urlsafe_b64decode(fresh.split(".")[0] + "=="))
    assert header["kid"] == upcoming
    events = api.ok("GET", "/audit")["events"]
    assert {"key_rotated", "admin"} <= {e["event"] for e in events}
    assert any(e.get("action") == "keys_rotate" for e in events)


# --- audit -------------------------------------------------------------------------------------
def test_audit_filters(running: RunningBroker, api: Api, http: httpx.Client) -> None:
    tokens = password_login(running, "127.0.0.2", "a")
    running.password_grant(http, "bob")
    running.password_grant(http, "bob", "wrong")
    assert running.refresh(http, tokens["refresh_token"]).status_code == 200
    every = api.ok("GET", "/audit")["events"]
    assert [e["id"] for e in every] == sorted((e["id"] for e in every), reverse=True)
    alice = api.ok("GET", "/audit", params={"login": "alice"})["events"]
    assert alice and {e["login"] for e in alice} == {"alice"}
    assert alice[0]["event"] == "login" and alice[0]["ip"] == "127.0.0.2"
    bob = api.ok("GET", "/audit", params={"login": "BOB", "event": "login"})["events"]
    assert [e["outcome"] for e in bob] == ["failure", "success"]
    logins = api.ok("GET", "/audit", params={"event": "login"})["events"]
    assert {e["login"] for e in logins} == {"alice", "bob"}
    assert len(api.ok("GET", "/audit", params={"limit": "1"})["events"]) == 1
    # The hot path is not kept: refreshes are log lines only.
    assert api.ok("GET", "/audit", params={"event": "refresh"})["events"] == []
    for bad in ("0", "abc", "1001", "-1"):
        assert_problem(api.call("GET", "/audit", params={"limit": bad}), 400, "limit")


# --- who may call ------------------------------------------------------------------------------
ROUTES = [
    ("GET", "/users/alice/sessions"),
    ("DELETE", "/users/alice/sessions"),
    ("POST", "/users/alice/unlock"),
    ("DELETE", "/sessions/some-sid"),
    ("GET", "/clients"),
    ("POST", "/clients"),
    ("GET", "/clients/dna-cli"),
    ("PATCH", "/clients/dna-cli"),
    ("DELETE", "/clients/dna-cli"),
    ("GET", "/keys"),
    ("POST", "/keys/rotate"),
    ("GET", "/audit"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_wants_an_admin_token(
    running: RunningBroker, http: httpx.Client, method: str, path: str
) -> None:
    response = http.request(method, "/admin/api" + path, json={"client_id": "x"})
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert "error=" not in response.headers["www-authenticate"]
    alice = running.password_grant(http, "alice").json()["access_token"]
    refused = Api(http, alice).call(method, path, json={"client_id": "x"})
    assert_problem(refused, 403)
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert api_unchanged(http)


def api_unchanged(http: httpx.Client) -> bool:
    api = Api(http, admin_token(http))
    return "dna-cli" in [c["client_id"] for c in api.ok("GET", "/clients")["clients"]]


def test_tokens_refused(running: RunningBroker, http: httpx.Client, clock: MovableClock) -> None:
    garbage = Api(http, "not-a-token").call("GET", "/clients")
    assert_problem(garbage, 401)
    assert 'error="invalid_token"' in garbage.headers["www-authenticate"]
    basic = http.get("/admin/api/clients", auth=ADMIN)
    assert_problem(basic, 401)
    # A service without the admin right, and the admin client without the scope: 403.
    backend = token_for(http, ("dna-backend", "dna-backend-secret"))
    assert_problem(Api(http, backend).call("GET", "/clients"), 403)
    unscoped = Api(http, token_for(http)).call("GET", "/clients")
    assert_problem(unscoped, 403)
    assert 'error="insufficient_scope"' in unscoped.headers["www-authenticate"]
    # Revoked or expired: 401.
    revoked = admin_token(http)
    assert http.post("/revoke", data={"token": revoked}, auth=ADMIN).status_code == 200
    assert_problem(Api(http, revoked).call("GET", "/clients"), 401)
    expiring = admin_token(http)
    clock.advance(601)
    assert_problem(Api(http, expiring).call("GET", "/clients"), 401)


def test_unknown_paths_and_methods_are_problems(api: Api, http: httpx.Client) -> None:
    assert_problem(api.call("GET", "/nothing-here"), 404)
    wrong = api.call("PUT", "/clients")
    assert_problem(wrong, 405)
    assert "GET" in wrong.headers["allow"]
    assert http.get("/not-admin").headers["content-type"].startswith("text/plain")


def test_rate_limit(tmp_path: Path, clock: MovableClock) -> None:
    with (
        broker_with_emulator(tmp_path, clock, admin_rate_limit=3) as (running, _emu, _site),
        running.client() as http,
    ):
        api = Api(http, admin_token(http))
        for _ in range(3):
            api.ok("GET", "/keys")
        refused = api.call("GET", "/keys")
        assert_problem(refused, 429)
        assert int(refused.headers["retry-after"]) > 0
        clock.advance(61)
        api.ok("GET", "/keys")
        metrics = http.get("/metrics").text
        assert (
            'broker_admin_actions_total{action="keys_list",outcome="rate_limited"} 1.0' in metrics
        )
        assert 'broker_admin_actions_total{action="keys_list",outcome="success"}' in metrics


@pytest.fixture
def flaky(tmp_path: Path, clock: MovableClock) -> Iterator[tuple[str, FlakyStore]]:
    """A broker whose store can be switched off (tests/support/flaky_store.py)."""
    with broker_on_flaky_store(tmp_path, clock) as b:
        yield b.url, b.store


def test_store_down_is_503(flaky: tuple[str, FlakyStore]) -> None:
    url, store = flaky
    with httpx.Client(base_url=url, timeout=10) as http:
        api = Api(http, admin_token(http))
        store.down = True
        for method, path in ROUTES:
            response = api.call(method, path, json={"grant_types": ["password"]})
            assert_problem(response, 503)
            assert int(response.headers["retry-after"]) > 0
        store.down = False
        api.ok("GET", "/clients")
