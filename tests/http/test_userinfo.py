"""GET/POST /userinfo: claims by scope, RFC 6750 errors, store-backed activity."""

from __future__ import annotations

import httpx
import pytest

from tests.support.broker import RunningBroker
from tests.support.oidc import Flow, clock, http, login_code, running

__all__ = ["clock", "http", "running"]


def tokens(http: httpx.Client, scope: str) -> dict[str, str]:
    flow = Flow(scope=scope)
    body: dict[str, str] = flow.redeem(http, login_code(http, flow)).json()
    return body


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("openid", {"sub": "101"}),
        ("openid profile", {"sub": "101", "name": "Alice Artist", "preferred_username": "alice"}),
        ("openid email", {"sub": "101", "email": "alice@example.com", "email_verified": True}),
        (
            "openid profile email",
            {
                "sub": "101",
                "name": "Alice Artist",
                "preferred_username": "alice",
                "email": "alice@example.com",
                "email_verified": True,
            },
        ),
    ],
)
def test_claims_by_scope(http: httpx.Client, scope: str, expected: dict[str, object]) -> None:
    at = tokens(http, scope)["access_token"]
    for method in ("GET", "POST"):
        response = http.request(method, "/userinfo", headers={"Authorization": f"Bearer {at}"})
        assert response.status_code == 200
        assert response.json() == expected
        assert response.headers["cache-control"] == "no-store"


def test_password_grant_tokens_work_too(http: httpx.Client, running: RunningBroker) -> None:
    at = running.password_grant(http, scope="openid profile").json()["access_token"]
    response = http.get("/userinfo", headers={"Authorization": f"Bearer {at}"})
    assert response.json()["preferred_username"] == "alice"


ERRORS = [
    ("no header", None, 401, "invalid_token"),
    ("basic scheme", "Basic YWxpY2U6eA==", 400, "invalid_request"),
    ("two tokens", "Bearer a b", 400, "invalid_request"),
    ("garbage", "Bearer not.a.jwt", 401, "invalid_token"),
]


@pytest.mark.parametrize(("case", "header", "status", "error"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(http: httpx.Client, case: str, header: str | None, status: int, error: str) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = http.get("/userinfo", headers=headers)
    assert response.status_code == status
    assert response.json()["error"] == error
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer realm=")
    if header is None:
        assert "error=" not in challenge  # RFC 6750 §3.1: no error code without credentials
    else:
        assert f'error="{error}"' in challenge


def test_without_openid_scope_is_403(http: httpx.Client, running: RunningBroker) -> None:
    at = running.password_grant(http, scope="profile").json()["access_token"]
    response = http.get("/userinfo", headers={"Authorization": f"Bearer {at}"})
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_expired_token_is_401(http: httpx.Client, running: RunningBroker) -> None:
    at = tokens(http, "openid")["access_token"]
    running.broker.clock.advance(running.settings.access_token_ttl + 1)
    response = http.get("/userinfo", headers={"Authorization": f"Bearer {at}"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"
