"""FastAPI require_token and the Starlette AuthenticationBackend (DNA: test_client_dna.py).

No `from __future__ import annotations` here: FastAPI must see the dependencies that
the route annotations build from local variables.
"""

from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from broker_client import AccessTokenClaims, TokenValidator
from broker_client.integrations.fastapi import require_token
from broker_client.integrations.starlette import BrokerAuthBackend, on_auth_error
from client_servers import serve
from client_support import ISSUER, FakeBroker, FakeClock


@pytest.fixture
def async_validator(broker: FakeBroker, clock: FakeClock) -> Iterator[TokenValidator]:
    # The app runs on uvicorn's loop; the validator fetches on its own thread.
    with (
        broker.client() as client,
        TokenValidator(ISSUER, "dna-api", http_client=client, clock=clock) as validator,
    ):
        yield validator


def fastapi_app(validator: TokenValidator) -> FastAPI:
    app = FastAPI()
    app.state.broker_validator = validator

    @app.get("/me")
    async def me(claims: Annotated[AccessTokenClaims, Depends(require_token())]) -> dict[str, Any]:
        return {"sub": claims.sub, "login": claims.sg_login}

    @app.get("/admin")
    async def admin(
        claims: Annotated[AccessTokenClaims, Depends(require_token(validator, scopes=["admin"]))],
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    return app


def run(app: Any) -> Iterator[httpx.Client]:
    with serve(app) as server, httpx.Client(base_url=server.url) as client:
        yield client


@pytest.fixture
def api(async_validator: TokenValidator) -> Iterator[httpx.Client]:
    yield from run(fastapi_app(async_validator))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_fastapi_accepts_a_good_token(api: httpx.Client, broker: FakeBroker) -> None:
    response = api.get("/me", headers=bearer(broker.mint()))
    assert response.status_code == 200
    assert response.json() == {"sub": "101", "login": "alice"}


def test_fastapi_without_credentials_is_a_bare_challenge(api: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Basic YWxpY2U6cHc="}):
        response = api.get("/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "make",
    [
        lambda b: b.mint(exp=int(b.clock()) - 3600),
        lambda b: b.mint(aud="review-api"),
        lambda b: b.mint(typ="rt+jwt", aud=ISSUER),
        lambda b: "garbage",
    ],
    ids=["expired", "wrong audience", "refresh token", "garbage"],
)
def test_fastapi_rejects_bad_tokens_with_invalid_token(
    api: httpx.Client, broker: FakeBroker, make: Any
) -> None:
    response = api.get("/me", headers=bearer(make(broker)))
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge


def test_fastapi_malformed_bearer_header_is_invalid_request(api: httpx.Client) -> None:
    response = api.get("/me", headers={"Authorization": "Bearer two tokens"})
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


def test_fastapi_missing_scope_is_insufficient_scope(api: httpx.Client, broker: FakeBroker) -> None:
    response = api.get("/admin", headers=bearer(broker.mint()))
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="admin"' in challenge
    assert api.get("/admin", headers=bearer(broker.mint(scope="openid admin"))).status_code == 200


def test_fastapi_broker_unreachable_is_503(broker: FakeBroker, clock: FakeClock) -> None:
    broker.down = True
    with (
        broker.client() as client,
        TokenValidator(ISSUER, "dna-api", http_client=client, clock=clock) as validator,
    ):
        for api in run(fastapi_app(validator)):
            response = api.get("/me", headers=bearer(broker.mint()))
            assert response.status_code == 503
            assert 'error="temporarily_unavailable"' in response.headers["www-authenticate"]
            assert int(response.headers["retry-after"]) >= 1


def test_fastapi_needs_a_validator() -> None:
    app = FastAPI()

    @app.get("/me")
    async def me(claims: Annotated[AccessTokenClaims, Depends(require_token())]) -> str:
        return claims.sub

    for client in run(app):
        assert client.get("/me", headers=bearer("x")).status_code == 500


@requires("authenticated")
async def whoami(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "user": request.user.display_name,
            "id": request.user.identity,
            "scopes": request.auth.scopes,
        }
    )


@pytest.fixture
def starlette_client(async_validator: TokenValidator) -> Iterator[httpx.Client]:
    middleware = [
        Middleware(
            AuthenticationMiddleware,
            backend=BrokerAuthBackend(async_validator, realm="dna"),
            on_error=on_auth_error,
        )
    ]
    app = Starlette(routes=[Route("/whoami", whoami)], middleware=middleware)
    yield from run(app)


def test_starlette_backend_authenticates(
    starlette_client: httpx.Client, broker: FakeBroker
) -> None:
    response = starlette_client.get("/whoami", headers=bearer(broker.mint()))
    assert response.status_code == 200
    assert response.json() == {
        "user": "Alice Artist",
        "id": "101",
        "scopes": ["authenticated", "email", "openid", "profile"],
    }


def test_starlette_backend_rejects_with_a_challenge(
    starlette_client: httpx.Client, broker: FakeBroker
) -> None:
    response = starlette_client.get("/whoami", headers=bearer(broker.mint(aud="review-api")))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="dna", error="invalid_token"')


def test_starlette_backend_leaves_anonymous_requests_to_the_endpoint(
    starlette_client: httpx.Client,
) -> None:
    assert starlette_client.get("/whoami").status_code == 403  # starlette's requires()
