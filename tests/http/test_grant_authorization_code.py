"""POST /token with grant_type=authorization_code: PKCE, single use, replay revocation,
redirect_uri binding, client binding, expiry, and the OpenID Connect ID token."""

from __future__ import annotations

import base64
import hashlib

import httpx
import jwt
import pytest

from tests.support.broker import RunningBroker
from tests.support.clock import MovableClock
from tests.support.oidc import Flow, clock, http, login_code, running

__all__ = ["clock", "http", "running"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_code_flow_issues_tokens_and_id_token(http: httpx.Client, running: RunningBroker) -> None:
    flow = Flow()
    code = login_code(http, flow)
    response = flow.redeem(http, code)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "openid profile email"
    assert body["refresh_token"]  # a client allowed refresh_token gets one without offline_access
    jwks = jwt.PyJWKSet.from_dict(http.get("/jwks.json").json())
    header = jwt.get_unverified_header(body["id_token"])
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = jwt.decode(
        body["id_token"], key.key, algorithms=["RS256"], audience="dna-frontend", issuer=running.url
    )
    assert header["alg"] == "RS256"
    assert claims["nonce"] == flow.nonce
    assert claims["sub"] == "101" and claims["email"] == "alice@example.com"
    assert isinstance(claims["auth_time"], int) and claims["sid"]
    digest = hashlib.sha256(body["access_token"].encode()).digest()
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")
    access = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert access["sid"] == claims["sid"] and access["client_id"] == "dna-frontend"
    # The refresh token rotates for the browser client too.
    refreshed = running.refresh(http, body["refresh_token"], client_id="dna-frontend")
    assert (
        refreshed.status_code == 200 and refreshed.json()["refresh_token"] != body["refresh_token"]
    )


def test_replayed_code_fails_and_revokes_what_it_issued(
    http: httpx.Client, running: RunningBroker
) -> None:
    flow = Flow()
    code = login_code(http, flow)
    first = flow.redeem(http, code).json()
    again = flow.redeem(http, code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    refreshed = running.refresh(http, first["refresh_token"], client_id="dna-frontend")
    assert refreshed.json()["error"] == "invalid_grant"
    assert http.get("/userinfo", headers=bearer(first["access_token"])).status_code == 401


BAD_REDEMPTIONS = [
    ("wrong verifier", {"code_verifier": "x" * 64}, "invalid_grant"),
    ("short verifier", {"code_verifier": "abc"}, "invalid_grant"),
    ("missing verifier", {"code_verifier": None}, "invalid_request"),
    ("redirect_uri other port", {"redirect_uri": "http://127.0.0.1:9/callback"}, "invalid_grant"),
    ("redirect_uri missing", {"redirect_uri": None}, "invalid_grant"),
    ("other client", {"client_id": "review-tool"}, "invalid_grant"),
    ("client without the grant", {"client_id": "dna-cli"}, "unauthorized_client"),
    ("unknown code", {"code": "not-a-code"}, "invalid_grant"),
    ("missing code", {"code": None}, "invalid_request"),
]


@pytest.mark.parametrize(
    ("case", "overrides", "error"), BAD_REDEMPTIONS, ids=[c[0] for c in BAD_REDEMPTIONS]
)
def test_bad_redemptions(
    http: httpx.Client, case: str, overrides: dict[str, str | None], error: str
) -> None:
    flow = Flow()
    code = login_code(http, flow)
    if "code" in overrides:
        code = overrides.pop("code")  # type: ignore[assignment]
    response = flow.redeem(http, code, **overrides)  # type: ignore[arg-type]
    assert response.status_code in (400, 401)
    assert response.json()["error"] == error


def test_failed_pkce_burns_the_code(http: httpx.Client) -> None:
    flow = Flow()
    code = login_code(http, flow)
    assert flow.redeem(http, code, code_verifier="y" * 64).json()["error"] == "invalid_grant"
    assert flow.redeem(http, code).json()["error"] == "invalid_grant"


def test_code_expires_after_60_seconds(http: httpx.Client, clock: MovableClock) -> None:
    flow = Flow()
    code = login_code(http, flow)
    clock.advance(61)
    assert flow.redeem(http, code).json()["error"] == "invalid_grant"


def test_code_of_a_logged_out_session_fails(http: httpx.Client, running: RunningBroker) -> None:
    flow = Flow()
    code = login_code(http, flow)
    session = _only_session(running)
    running.broker.sessions.end_session(session, "logout")
    assert flow.redeem(http, code).json()["error"] == "invalid_grant"


def _only_session(running: RunningBroker) -> str:
    import sqlite3

    path = running.settings.store_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        (sid,) = conn.execute("SELECT sid FROM sessions").fetchone()
    return str(sid)


def test_scope_without_openid_has_no_id_token(http: httpx.Client) -> None:
    flow = Flow(scope="profile")
    body = flow.redeem(http, login_code(http, flow)).json()
    assert "id_token" not in body and body["scope"] == "profile"
