"""Token exchange (RFC 8693) to broker audiences, against a real broker + emulator."""

from __future__ import annotations

import httpx
import jwt
import pytest

from tests.support.broker import RunningBroker
from tests.support.clock import MovableClock
from tests.support.services import (
    ACCESS_TOKEN_TYPE,
    BACKEND,
    SHOTGRID_TOKEN_TYPE,
    TOKEN_EXCHANGE,
    add_confidential_client,
    broker,
    claims_of,
    clock,
    env,
    exchange,
    http,
    is_active,
    login,
    revoke,
)

__all__ = ["broker", "clock", "env", "http"]

pytestmark = pytest.mark.timeout(60)


def test_exchange_to_another_audience_names_the_actor(
    broker: RunningBroker, http: httpx.Client
) -> None:
    subject = login(broker, http)["access_token"]
    response = exchange(http, subject, audience="review-api")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert "refresh_token" not in body
    token = body["access_token"]
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    key = jwt.PyJWKClient(f"{broker.url}/jwks.json").get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience="review-api",
        issuer=broker.url,
        options={"verify_iat": False},
    )
    before = claims_of(subject)
    assert claims["act"] == {"sub": "dna-backend"}
    assert claims["client_id"] == "dna-backend"
    assert claims["sub"] == "101" and claims["sg_login"] == "alice"
    assert claims["sid"] == before["sid"] and claims["fam"] == before["fam"]
    assert claims["scope"] == before["scope"] == body["scope"]
    assert claims["exp"] <= before["exp"]
    assert claims["jti"] != before["jti"]
    assert is_active(http, token)


def test_nested_act_when_the_subject_already_has_an_actor(
    broker: RunningBroker, http: httpx.Client
) -> None:
    add_confidential_client(
        broker,
        "review-backend",
        "review-backend-secret",
        grant_types=(TOKEN_EXCHANGE,),
        audiences=("dna-api",),
    )
    subject = login(broker, http)["access_token"]
    first = exchange(http, subject, audience="review-api").json()["access_token"]
    second = exchange(
        http, first, auth=("review-backend", "review-backend-secret"), audience="dna-api"
    )
    assert second.status_code == 200, second.text
    claims = claims_of(second.json()["access_token"])
    assert claims["act"] == {"sub": "review-backend", "act": {"sub": "dna-backend"}}
    assert claims["aud"] == "dna-api"
    assert claims["client_id"] == "review-backend"


@pytest.mark.parametrize(
    ("extra", "audience"),
    [
        ({"resource": "review-api"}, "review-api"),
        ({"resource": "review-api", "audience": "review-api"}, "review-api"),
        ({}, "dna-api"),  # no target: the subject's own audience, if the client may
        ({"requested_token_type": ACCESS_TOKEN_TYPE, "audience": "review-api"}, "review-api"),
    ],
)
def test_targets(
    broker: RunningBroker, http: httpx.Client, extra: dict[str, str], audience: str
) -> None:
    subject = login(broker, http)["access_token"]
    response = exchange(http, subject, **extra)
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["aud"] == audience


def test_scope_only_narrows(broker: RunningBroker, http: httpx.Client) -> None:
    subject = login(broker, http)["access_token"]
    narrowed = exchange(http, subject, audience="review-api", scope="profile")
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["scope"] == "profile"
    assert claims_of(narrowed.json()["access_token"])["scope"] == "profile"
    wider = exchange(http, subject, audience="review-api", scope="profile offline_access")
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"


def test_lifetime_never_beyond_the_subjects(
    broker: RunningBroker, http: httpx.Client, clock: MovableClock
) -> None:
    subject = login(broker, http)["access_token"]
    clock.advance(500)
    body = exchange(http, subject, audience="review-api").json()
    assert body["expires_in"] == 100
    assert claims_of(body["access_token"])["exp"] == claims_of(subject)["exp"]


def test_max_exchange_lifetime_lets_a_client_outlive_the_subject(
    broker: RunningBroker, http: httpx.Client, clock: MovableClock
) -> None:
    add_confidential_client(
        broker,
        "batch",
        "batch-secret",
        grant_types=(TOKEN_EXCHANGE,),
        audiences=("review-api",),
        max_exchange_lifetime=300,
    )
    subject = login(broker, http)["access_token"]
    clock.advance(500)
    body = exchange(http, subject, auth=("batch", "batch-secret"), audience="review-api").json()
    assert body["expires_in"] == 400  # 100 s left on the subject + 300
    clock.advance(-500)
    fresh = exchange(http, subject, auth=("batch", "batch-secret"), audience="review-api").json()
    assert fresh["expires_in"] == 600  # never beyond the access-token lifetime


def test_revoking_the_subjects_family_deactivates_the_exchanged_token(
    broker: RunningBroker, http: httpx.Client
) -> None:
    tokens = login(broker, http)
    exchanged = exchange(http, tokens["access_token"], audience="review-api").json()
    assert is_active(http, exchanged["access_token"])
    assert revoke(http, tokens["refresh_token"]).status_code == 200
    assert not is_active(http, exchanged["access_token"])


@pytest.mark.parametrize(
    ("extra", "status", "error"),
    [
        ({"audience": "billing-api"}, 400, "invalid_target"),
        ({"resource": "https://billing.example/api"}, 400, "invalid_target"),
        ({"audience": "dna-api", "resource": "review-api"}, 400, "invalid_target"),
        ({"subject_token": ""}, 400, "invalid_request"),
        ({"subject_token_type": ""}, 400, "invalid_request"),
        (
            {"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"},
            400,
            "invalid_request",
        ),
        ({"subject_token": "garbage"}, 400, "invalid_request"),
        ({"actor_token": "x", "actor_token_type": ACCESS_TOKEN_TYPE}, 400, "invalid_request"),
        (
            {"requested_token_type": "urn:ietf:params:oauth:token-type:saml2"},
            400,
            "invalid_request",
        ),
    ],
)
def test_request_errors(
    broker: RunningBroker, http: httpx.Client, extra: dict[str, str], status: int, error: str
) -> None:
    subject = login(broker, http)["access_token"]
    response = exchange(http, subject, **extra)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


def test_a_refresh_token_is_not_a_subject(broker: RunningBroker, http: httpx.Client) -> None:
    refresh = login(broker, http)["refresh_token"]
    response = exchange(http, refresh, audience="review-api")
    assert response.json()["error"] == "invalid_request"


def test_a_client_token_is_not_a_user_subject(http: httpx.Client) -> None:
    token = http.post("/token", data={"grant_type": "client_credentials"}, auth=BACKEND).json()
    response = exchange(http, token["access_token"], audience="review-api")
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("auth", "form", "status", "error"),
    [
        # Public clients cannot authenticate with a secret: invalid_client (RFC 6749 §5.2),
        # which is what a confidential-only grant must answer to them.
        (None, {"client_id": "dna-cli"}, 401, "invalid_client"),
        (None, {"client_id": "dna-frontend"}, 401, "invalid_client"),
        (None, {"client_id": "dna-backend"}, 401, "invalid_client"),  # no secret
        (("dna-backend", "wrong"), {}, 401, "invalid_client"),
        (("reporting", "reporting-secret"), {}, 400, "unauthorized_client"),
    ],
)
def test_client_refusals(
    broker: RunningBroker,
    http: httpx.Client,
    auth: tuple[str, str] | None,
    form: dict[str, str],
    status: int,
    error: str,
) -> None:
    add_confidential_client(
        broker, "reporting", "reporting-secret", grant_types=("client_credentials",)
    )
    subject = login(broker, http)["access_token"]
    response = exchange(http, subject, auth=auth, audience="dna-api", **form)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


def test_shotgrid_tokens_need_the_permission(broker: RunningBroker, http: httpx.Client) -> None:
    add_confidential_client(
        broker,
        "review-backend",
        "review-backend-secret",
        grant_types=(TOKEN_EXCHANGE,),
        audiences=("dna-api",),
    )
    subject = login(broker, http)["access_token"]
    response = exchange(
        http,
        subject,
        auth=("review-backend", "review-backend-secret"),
        requested_token_type=SHOTGRID_TOKEN_TYPE,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


def test_expired_subject_is_refused(
    broker: RunningBroker, http: httpx.Client, clock: MovableClock
) -> None:
    subject = login(broker, http)["access_token"]
    clock.advance(600)
    response = exchange(http, subject, audience="review-api")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("how", ["access", "refresh", "logout"])
def test_revoked_subject_is_refused(broker: RunningBroker, http: httpx.Client, how: str) -> None:
    tokens = login(broker, http)
    if how == "logout":
        sid = claims_of(tokens["access_token"])["sid"]
        broker.broker.sessions.end_session(sid, "logout")
    else:
        assert revoke(http, tokens[f"{how}_token"]).status_code == 200
    response = exchange(http, tokens["access_token"], audience="review-api")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_discovery_lists_the_service_endpoints(broker: RunningBroker, http: httpx.Client) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        meta = http.get(path).json()
        assert TOKEN_EXCHANGE in meta["grant_types_supported"]
        assert "client_credentials" in meta["grant_types_supported"]
        assert meta["revocation_endpoint"] == f"{broker.url}/revoke"
        assert meta["introspection_endpoint"] == f"{broker.url}/introspect"
        assert "none" in meta["revocation_endpoint_auth_methods_supported"]
        assert "none" not in meta["introspection_endpoint_auth_methods_supported"]
        assert "client_secret_basic" in meta["introspection_endpoint_auth_methods_supported"]
