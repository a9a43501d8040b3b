"""The DNA adapter: DNA's AuthProviderBase interface, its 503, revocations, and ShotGrid as
the token's user on the emulator.

`dna_app` is a FastAPI app written the way DNA's backend authenticates (an async
dependency that calls the sync `validate_token` and turns a `ValueError` into 401),
served by uvicorn, so the status codes are the ones DNA's users would get.
No `from __future__ import annotations`: FastAPI must see the dependency annotations.
"""

import socket
import time
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from shotgrid_emulator import ShotGridEmulator

from broker_client import InvalidToken, JWKSUnavailable, TokenRevoked
from broker_client.integrations.dna import BrokerAuthProvider, BrokerUnavailable
from client_servers import free_port, serve
from client_support import DROP, FakeBroker, FakeClock

ALICE_PROJECTS = ["Spring Shorts", "Harbor Lights"]
BOB_PROJECTS = ["Harbor Lights", "Night Market"]


@pytest.fixture
def real_time_broker() -> Iterator[tuple[FakeBroker, str]]:
    """The fake broker on real time (DNA's provider runs on time.time), over HTTP."""
    broker = FakeBroker(FakeClock(time.time()))
    with broker.served() as url:
        yield broker, url


@pytest.fixture
def dna(
    real_time_broker: tuple[FakeBroker, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[BrokerAuthProvider]:
    _, url = real_time_broker
    monkeypatch.setenv("BROKER_ISSUER", url)
    monkeypatch.setenv("BROKER_AUDIENCE", "dna-api")
    provider = BrokerAuthProvider.from_env()
    yield provider
    provider.close()


@pytest.fixture
def broker(real_time_broker: tuple[FakeBroker, str]) -> FakeBroker:
    return real_time_broker[0]


def test_validate_token_returns_every_claim(dna: BrokerAuthProvider, broker: FakeBroker) -> None:
    token = broker.mint(email_verified=True)
    claims = dna.validate_token(token)
    assert claims == broker.claims(jti=claims["jti"], email_verified=True)
    for name in ("email", "sub", "name", "sg_login", "sg_user_id", "email_verified"):
        assert name in claims
    assert claims["sg_login"] == "alice"
    assert claims["sid"] == "session-1"
    assert claims["fam"] == "family-1"
    assert dna.get_user_email(broker.mint()) == "alice@example.com"


@pytest.mark.parametrize(
    "make",
    [
        lambda b: b.mint(exp=int(b.clock()) - 3600),
        lambda b: b.mint(aud="review-api"),
        lambda b: b.mint(email=DROP),
        lambda b: b.mint(typ="rt+jwt"),
        lambda b: "not-a-token",
    ],
    ids=["expired", "wrong audience", "no email", "refresh token", "garbage"],
)
def test_invalid_tokens_raise_value_errors(
    dna: BrokerAuthProvider, broker: FakeBroker, make: Any
) -> None:
    with pytest.raises(ValueError) as caught:
        dna.validate_token(make(broker))
    assert isinstance(caught.value, InvalidToken)
    with pytest.raises(ValueError):
        dna.get_user_email(make(broker))


def test_a_revoked_session_is_refused_at_the_next_poll(
    dna: BrokerAuthProvider, broker: FakeBroker
) -> None:
    token = broker.mint()
    assert dna.validate_token(token)["sub"] == "101"
    broker.revoke("sid", "session-1")
    assert dna.validator.refresh()
    with pytest.raises(TokenRevoked) as caught:
        dna.validate_token(token)  # a cached token too
    assert isinstance(caught.value, ValueError)


def test_audience_comes_from_the_environment(
    real_time_broker: tuple[FakeBroker, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, url = real_time_broker
    monkeypatch.setenv("BROKER_ISSUER", url)
    monkeypatch.setenv("BROKER_AUDIENCE", "review-api")
    provider = BrokerAuthProvider.from_env()
    try:
        assert provider.validate_token(broker.mint(aud="review-api"))["sub"] == "101"
        with pytest.raises(ValueError):
            provider.validate_token(broker.mint())
    finally:
        provider.close()


def test_poll_interval_comes_from_the_environment(real_time_broker: tuple[FakeBroker, str]) -> None:
    _, url = real_time_broker
    provider = BrokerAuthProvider.from_env({"BROKER_ISSUER": url, "BROKER_REVOCATION_POLL": "2"})
    try:
        assert provider.validator.refresher.poll == 2
        assert provider.validator.revocations is not None  # on by default for DNA
        assert not provider.validator.fail_closed
    finally:
        provider.close()
    default = BrokerAuthProvider.from_env(
        {"BROKER_ISSUER": url, "BROKER_REVOCATION_FAIL_CLOSED": "1"}
    )
    try:
        assert default.validator.refresher.poll == 5
        assert default.validator.fail_closed
    finally:
        default.close()


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"BROKER_ISSUER": "  "},
        {"BROKER_ISSUER": "http://127.0.0.1:1", "BROKER_LEEWAY": "soon"},
        {"BROKER_ISSUER": "http://127.0.0.1:1", "BROKER_REVOCATION_POLL": "0"},
        {"BROKER_ISSUER": "http://127.0.0.1:1", "BROKER_REVOCATION_POLL": "often"},
    ],
)
def test_from_env_needs_its_settings(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="BROKER_"):
        BrokerAuthProvider.from_env(env)


def test_broker_unreachable_is_a_503_not_a_token_error() -> None:
    provider = BrokerAuthProvider.from_env({"BROKER_ISSUER": f"http://127.0.0.1:{free_port()}"})
    try:
        with pytest.raises(BrokerUnavailable) as caught:
            provider.validate_token(FakeBroker().mint())
        error = caught.value
        assert isinstance(error, JWKSUnavailable)
        assert not isinstance(error, ValueError)
        assert error.status_code == 503
        assert int(error.headers["Retry-After"]) >= 1
    finally:
        provider.close()


# --- through a real FastAPI app, authenticated the way DNA's backend does ------------------


def dna_app(provider: BrokerAuthProvider) -> FastAPI:
    app = FastAPI()
    bearer = HTTPBearer(auto_error=False)

    async def current_user(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        if credentials is None:
            raise HTTPException(401, "Missing authentication credentials")
        try:
            claims = provider.validate_token(credentials.credentials)  # sync, on the loop
        except ValueError as exc:
            raise HTTPException(401, str(exc), {"WWW-Authenticate": "Bearer"}) from exc
        email: str = claims["email"]
        return email

    @app.get("/me")
    async def me(email: Annotated[str, Depends(current_user)]) -> dict[str, str]:
        return {"email": email}

    return app


def get(url: str, token: str) -> httpx.Response:
    return httpx.get(url + "/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_fastapi_answers_503_with_retry_after_when_the_broker_is_down() -> None:
    token = FakeBroker(FakeClock(time.time())).mint()
    provider = BrokerAuthProvider.from_env({"BROKER_ISSUER": f"http://127.0.0.1:{free_port()}"})
    try:
        with serve(dna_app(provider)) as app:
            response = get(app.url, token)
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) >= 1
            assert get(app.url, "garbage").status_code == 401
    finally:
        provider.close()


def test_fastapi_answers_at_once_while_the_broker_hangs() -> None:
    """A broker that accepts connections and never answers: DNA's loop is not held by
    the key fetch (its async dependency calls the sync validate_token)."""
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(64)  # the kernel accepts; nobody ever reads or answers
        issuer = f"http://127.0.0.1:{black_hole.getsockname()[1]}"
        provider = BrokerAuthProvider.from_env({"BROKER_ISSUER": issuer}, ready_timeout=0)
        try:
            with serve(dna_app(provider)) as app:
                token = FakeBroker(FakeClock(time.time()), issuer=issuer).mint()
                started = time.perf_counter()
                response = get(app.url, token)
                elapsed = time.perf_counter() - started
                assert response.status_code == 503
                assert elapsed < 2.0  # the fetch's own timeout is 5 s (wide: parallel workers)
        finally:
            provider.close()


def test_fastapi_answers_200_and_401(dna: BrokerAuthProvider, broker: FakeBroker) -> None:
    with serve(dna_app(dna)) as app:
        assert get(app.url, broker.mint()).json() == {"email": "alice@example.com"}
        response = get(app.url, broker.mint(aud="review-api"))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


# --- ShotGrid as the user ------------------------------------------------------------------


@pytest.fixture
def shotgrid() -> Iterator[tuple[ShotGridEmulator, str]]:
    emulator = ShotGridEmulator.default()
    with serve(emulator.app) as site:
        yield emulator, site.url


def test_user_shotgrid_sees_exactly_the_users_projects(
    real_time_broker: tuple[FakeBroker, str], shotgrid: tuple[ShotGridEmulator, str]
) -> None:
    broker, url = real_time_broker
    _, site = shotgrid
    env = {
        "BROKER_ISSUER": url,
        "SHOTGRID_URL": site,
        "SHOTGRID_SCRIPT_NAME": "token-broker",
        "SHOTGRID_API_KEY": "token-broker-key",
    }
    provider = BrokerAuthProvider.from_env(env)
    try:
        for login, user_id, expected in (
            ("alice", 101, ALICE_PROJECTS),
            ("bob", 102, BOB_PROJECTS),
        ):
            claims = provider.validate_token(
                broker.mint(sub=str(user_id), sg_login=login, sg_user_id=user_id)
            )
            with provider.user_shotgrid(claims) as sg:
                projects = sg.find("Project", [], ["name"], order=[])
            assert [p["name"] for p in projects] == expected
        with pytest.raises(InvalidToken):
            provider.user_shotgrid(provider.validate_token(broker.mint(sg_login=DROP))).__enter__()
    finally:
        provider.close()


def test_user_shotgrid_needs_dna_shotgrid_settings(
    real_time_broker: tuple[FakeBroker, str],
) -> None:
    broker, url = real_time_broker
    provider = BrokerAuthProvider.from_env({"BROKER_ISSUER": url, "SHOTGRID_URL": "http://sg"})
    try:
        claims = provider.validate_token(broker.mint())
        with pytest.raises(RuntimeError, match="SHOTGRID_API_KEY, SHOTGRID_SCRIPT_NAME"):
            provider.user_shotgrid(claims).__enter__()
    finally:
        provider.close()
