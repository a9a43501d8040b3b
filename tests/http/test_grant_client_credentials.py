"""Client Credentials (RFC 6749 §4.4) and confidential client authentication
(`client_secret_basic`, `client_secret_post`) against a real broker."""

from __future__ import annotations

import httpx
import pytest

from tests.support.broker import RunningBroker
from tests.support.services import (
    BACKEND,
    add_confidential_client,
    broker,
    claims_of,
    clock,
    env,
    http,
    is_active,
)

__all__ = ["broker", "clock", "env", "http"]

pytestmark = pytest.mark.timeout(60)


def test_basic_auth_gets_a_client_token(http: httpx.Client) -> None:
    response = http.post("/token", data={"grant_type": "client_credentials"}, auth=BACKEND)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert "refresh_token" not in body and "id_token" not in body
    claims = claims_of(body["access_token"])
    assert claims["sub"] == "dna-backend"
    assert claims["client_id"] == "dna-backend"
    assert claims["aud"] == "dna-api"
    for user_claim in ("sid", "sg_login", "sg_user_id", "email", "name", "fam"):
        assert user_claim not in claims
    assert is_active(http, body["access_token"])


def test_post_auth_and_an_allowed_audience(http: httpx.Client) -> None:
    response = http.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_id": BACKEND[0],
            "client_secret": BACKEND[1],
            "audience": "review-api",
        },
    )
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["aud"] == "review-api"


def test_wrong_secret_with_basic_is_401_with_www_authenticate(http: httpx.Client) -> None:
    response = http.post(
        "/token", data={"grant_type": "client_credentials"}, auth=("dna-backend", "nope")
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")
    assert "nope" not in response.text


@pytest.mark.parametrize(
    ("data", "auth", "status", "error"),
    [
        ({"client_id": "dna-backend", "client_secret": "nope"}, None, 401, "invalid_client"),
        ({"client_id": "dna-backend"}, None, 401, "invalid_client"),  # no secret at all
        ({}, ("nobody", "x"), 401, "invalid_client"),
        ({"client_id": "dna-cli"}, None, 401, "invalid_client"),  # public client
        ({"scope": "openid"}, BACKEND, 400, "invalid_scope"),
        ({"scope": "offline_access"}, BACKEND, 400, "invalid_scope"),
        ({"audience": "billing-api"}, BACKEND, 400, "invalid_target"),
        ({"resource": "dna-api", "audience": "review-api"}, BACKEND, 400, "invalid_target"),
    ],
)
def test_refusals(
    http: httpx.Client,
    data: dict[str, str],
    auth: tuple[str, str] | None,
    status: int,
    error: str,
) -> None:
    response = http.post("/token", data={"grant_type": "client_credentials", **data}, auth=auth)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


def test_client_without_the_grant_is_unauthorized_client(
    broker: RunningBroker, http: httpx.Client
) -> None:
    add_confidential_client(broker, "reporting", "reporting-secret", grant_types=("password",))
    response = http.post(
        "/token", data={"grant_type": "client_credentials"}, auth=("reporting", "reporting-secret")
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


def test_scope_is_granted_from_the_clients_scopes(
    broker: RunningBroker, http: httpx.Client
) -> None:
    add_confidential_client(
        broker,
        "reporting",
        "reporting-secret",
        grant_types=("client_credentials",),
        scopes=("reports:read", "reports:write"),
    )
    auth = ("reporting", "reporting-secret")
    response = http.post(
        "/token", data={"grant_type": "client_credentials", "scope": "reports:read"}, auth=auth
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "reports:read"
    assert claims_of(response.json()["access_token"])["scope"] == "reports:read"
    wider = http.post(
        "/token", data={"grant_type": "client_credentials", "scope": "admin"}, auth=auth
    )
    assert wider.json()["error"] == "invalid_scope"
