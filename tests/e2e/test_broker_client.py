"""`broker_client` (clients/python) against the real broker and ShotGrid emulator.

Everything runs for real: the broker and the emulator under uvicorn, a FastAPI app
protected by `require_token` under its own uvicorn, the library fetching discovery and
the JWKS over HTTP, shotgun_api3 talking to the emulator. JWKS traffic is counted by a
transport wrapped around the httpx client handed to the library. The library fetches on
its own background thread (a validator never touches the network on the caller's thread),
so counts are read once that thread has done what the test waits for
(`TokenValidator.refresh`, or a condition polled with a deadline).

These tests live here rather than in clients/python/tests because they need the `broker`
package (tests.support starts the broker); the client distribution's own tests stay
runnable with nothing but `shotgrid-broker-client[test]` installed.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from broker_client import (
    AccessTokenClaims,
    BadSignature,
    ExpiredToken,
    InvalidToken,
    JWKSCache,
    JWKSUnavailable,
    TokenValidator,
    UnknownKey,
    UnsupportedAlgorithm,
    WrongAudience,
    WrongTokenType,
)
from broker_client.integrations.dna import BrokerAuthProvider
from broker_client.integrations.fastapi import require_token
from broker_client.integrations.starlette import BrokerAuthBackend, on_auth_error
from broker_client.shotgrid import (
    SHOTGRID_TOKEN_TYPE,
    TOKEN_EXCHANGE_GRANT,
    SudoConnectionPool,
    exchange_for_shotgrid_token,
)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shotgrid_emulator import ShotGridEmulator
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.servers import ServerThread, serve

pytestmark = pytest.mark.timeout(60)

DISCOVERY = "/.well-known/openid-configuration"
JWKS = "/jwks.json"


# --- plumbing ---------------------------------------------------------------------------


class CountingTransport(httpx.BaseTransport):
    """A real HTTP transport that counts the requests it is asked to send, by path."""

    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.counts[request.url.path] += 1
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def key_fetches(counts: Counter[str]) -> dict[str, int]:
    """Discovery and JWKS requests only (the revocation feed is polled besides)."""
    return {path: counts[path] for path in (DISCOVERY, JWKS) if counts[path]}


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll a condition the validator's background thread will make true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@dataclass
class ValidatorClock:
    """Epoch seconds for the library: the broker's movable clock plus an offset of our own,
    so the validator can be moved forward without the broker (and its tokens) moving."""

    broker_clock: MovableClock
    offset: float = 0.0

    def __call__(self) -> float:
        return self.broker_clock().timestamp() + self.offset


@dataclass
class ProtectedApp:
    """A FastAPI app behind `require_token`, served by uvicorn, and the JWKS traffic it made."""

    url: str
    app: FastAPI
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def validator(self) -> TokenValidator:
        validator: TokenValidator = self.app.state.broker_validator
        return validator

    def get(self, token: str | None, path: str = "/me") -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.get(self.url + path, headers=headers, timeout=10)


def protected_app(issuer: str, clock: ValidatorClock, counts: Counter[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with (
            httpx.Client(transport=CountingTransport(counts), timeout=5) as client,
            TokenValidator(issuer, "dna-api", http_client=client, clock=clock) as validator,
        ):
            app.state.broker_validator = validator
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/me")
    async def me(claims: Annotated[AccessTokenClaims, Depends(require_token())]) -> dict[str, Any]:
        return {"sub": claims.sub, "sg_login": claims.sg_login, "client_id": claims.client_id}

    @app.get("/admin")
    async def admin(
        claims: Annotated[AccessTokenClaims, Depends(require_token(scopes=["admin"]))],
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    return app


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def unb64json(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return value


def rsa_public_key(jwk: dict[str, Any]) -> rsa.RSAPublicKey:
    def number(name: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(jwk[name] + "=" * (-len(jwk[name]) % 4)))

    return rsa.RSAPublicNumbers(number("e"), number("n")).public_key()


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def env(
    tmp_path: Path, clock: MovableClock
) -> Iterator[tuple[RunningBroker, ShotGridEmulator, ServerThread]]:
    with broker_with_emulator(tmp_path, clock) as running:
        yield running


@pytest.fixture
def broker(env: tuple[RunningBroker, ShotGridEmulator, ServerThread]) -> RunningBroker:
    return env[0]


@pytest.fixture
def http(broker: RunningBroker) -> Iterator[httpx.Client]:
    with broker.client() as client:
        yield client


@pytest.fixture
def vclock(clock: MovableClock) -> ValidatorClock:
    return ValidatorClock(clock)


@pytest.fixture
def app(broker: RunningBroker, vclock: ValidatorClock) -> Iterator[ProtectedApp]:
    counts: Counter[str] = Counter()
    fastapi_app = protected_app(broker.url, vclock, counts)
    server = ServerThread(fastapi_app).start()
    try:
        yield ProtectedApp(server.url, fastapi_app, counts)
    finally:
        server.stop()


@pytest.fixture
def sync_counts() -> Counter[str]:
    return Counter()


@pytest.fixture
def validator(
    broker: RunningBroker, vclock: ValidatorClock, sync_counts: Counter[str]
) -> Iterator[TokenValidator]:
    """A sync validator in the test process, for the exception each refusal raises."""
    with httpx.Client(transport=CountingTransport(sync_counts), timeout=5) as client:
        jwks = JWKSCache(broker.url, http_client=client, clock=vclock)
        with TokenValidator(broker.url, "dna-api", jwks=jwks, clock=vclock) as validator:
            yield validator


def tokens_for(broker: RunningBroker, http: httpx.Client, user: str = "alice") -> dict[str, Any]:
    response = broker.password_grant(http, user)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def published_rsa_key(http: httpx.Client, kid: str) -> dict[str, Any]:
    keys = http.get(JWKS).json()["keys"]
    return next(k for k in keys if k["kid"] == kid)


# --- accepted and refused tokens --------------------------------------------------------


def test_alice_token_is_accepted(
    broker: RunningBroker, http: httpx.Client, app: ProtectedApp
) -> None:
    token = tokens_for(broker, http)["access_token"]
    response = app.get(token)
    assert response.status_code == 200, response.text
    assert response.json() == {"sub": "101", "sg_login": "alice", "client_id": "dna-cli"}
    # Discovery once, the JWKS once; the next request is answered from the caches.
    assert key_fetches(app.counts) == {DISCOVERY: 1, JWKS: 1}
    assert app.get(token).status_code == 200
    assert key_fetches(app.counts) == {DISCOVERY: 1, JWKS: 1}
    assert app.validator.signature_checks == 1
    assert app.validator.cache_hits == 1


def test_no_token_and_missing_scope(
    broker: RunningBroker, http: httpx.Client, app: ProtectedApp
) -> None:
    response = app.get(None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    token = tokens_for(broker, http)["access_token"]
    response = app.get(token, "/admin")
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope"')
    assert 'scope="admin"' in challenge


def expired(broker: RunningBroker, http: httpx.Client, clock: MovableClock) -> str:
    """Minted with the broker's clock moved back past the lifetime and the leeway."""
    clock.advance(-(600 + 30 + 5))
    try:
        return str(tokens_for(broker, http)["access_token"])
    finally:
        clock.advance(600 + 30 + 5)


def wrong_audience(broker: RunningBroker, http: httpx.Client, clock: MovableClock) -> str:
    """Signed by the broker's current key, for review-api rather than dna-api."""
    minter = broker.broker.minter
    return str(minter.access_token(None, "dna-backend", "", audience="review-api").token)


def refresh_typed(broker: RunningBroker, http: httpx.Client, clock: MovableClock) -> str:
    return str(tokens_for(broker, http)["refresh_token"])


def _resigned(token: str, header_changes: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    head, payload, _ = token.split(".")
    header = {**unb64json(head), **header_changes}
    return header, b64json(header), payload


def alg_none(broker: RunningBroker, http: httpx.Client, clock: MovableClock) -> str:
    access = tokens_for(broker, http)["access_token"]
    _, head, payload = _resigned(access, {"alg": "none"})
    return f"{head}.{payload}."


def hs256_with_public_key(broker: RunningBroker, http: httpx.Client, clock: MovableClock) -> str:
    """The classic confusion: HMAC keyed with the bytes of the broker's RSA public key."""
    access = tokens_for(broker, http)["access_token"]
    header, head, payload = _resigned(access, {"alg": "HS256"})
    public = rsa_public_key(published_rsa_key(http, header["kid"]))
    secret = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mac = hmac.new(secret, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{b64(mac)}"


def tampered(broker: RunningBroker, http: httpx.Client, clock: MovableClock) -> str:
    """Alice's token claiming to be bob, her signature kept."""
    head, payload, signature = tokens_for(broker, http)["access_token"].split(".")
    claims = {**unb64json(payload), "sub": "102", "sg_login": "bob", "sg_user_id": 102}
    return f"{head}.{b64json(claims)}.{signature}"


def unknown_kid(broker: RunningBroker, http: httpx.Client, clock: MovableClock) -> str:
    """Well formed and properly signed, by an RSA key the broker never published."""
    access = tokens_for(broker, http)["access_token"]
    _, head, payload = _resigned(access, {"kid": f"stranger-{uuid.uuid4().hex}"})
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signature = key.sign(f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{payload}.{b64(signature)}"


Forge = Callable[[RunningBroker, httpx.Client, MovableClock], str]

REFUSED: list[tuple[Forge, type[InvalidToken]]] = [
    (expired, ExpiredToken),
    (wrong_audience, WrongAudience),
    (refresh_typed, WrongTokenType),  # typ rt+jwt: "a refresh token, not an access token"
    (alg_none, UnsupportedAlgorithm),
    (hs256_with_public_key, UnsupportedAlgorithm),
    (tampered, BadSignature),
    (unknown_kid, UnknownKey),
]


@pytest.mark.parametrize(("forge", "error"), REFUSED, ids=[forge.__name__ for forge, _ in REFUSED])
def test_bad_tokens_are_refused(
    broker: RunningBroker,
    http: httpx.Client,
    clock: MovableClock,
    app: ProtectedApp,
    validator: TokenValidator,
    forge: Forge,
    error: type[InvalidToken],
) -> None:
    good = tokens_for(broker, http)["access_token"]
    assert app.get(good).status_code == 200  # the app works, keys are loaded
    token = forge(broker, http, clock)

    response = app.get(token)
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    with pytest.raises(error) as raised:
        validator.validate(token)
    assert isinstance(raised.value, ValueError)
    assert raised.value.error == "invalid_token"
    # Refusals are never cached: the next try is checked again (and refused again).
    assert app.get(token).status_code == 401


def test_unknown_kid_refetches_once_per_interval(
    broker: RunningBroker, http: httpx.Client, clock: MovableClock, app: ProtectedApp
) -> None:
    assert app.get(tokens_for(broker, http)["access_token"]).status_code == 200
    assert app.counts[JWKS] == 1
    strangers = [unknown_kid(broker, http, clock) for _ in range(3)]
    for token in strangers:
        assert app.get(token).status_code == 401
    # The first stranger made the app look again; the others fell within the interval.
    assert eventually(lambda: app.counts[JWKS] == 2)
    app.validator.refresh(force=False)
    assert app.counts[JWKS] == 2


# --- key rotation while the app runs ------------------------------------------------------


def kid_of(token: str) -> str:
    return str(unb64json(token.split(".")[0])["kid"])


def test_key_rotation_is_picked_up_with_one_refetch(
    broker: RunningBroker, http: httpx.Client, app: ProtectedApp
) -> None:
    first = tokens_for(broker, http)["access_token"]
    assert app.get(first).status_code == 200
    assert key_fetches(app.counts) == {DISCOVERY: 1, JWKS: 1}

    # One rotation promotes the key the broker already published as "next": the app has
    # it cached, so the new kid costs no request at all.
    promoted, _ = broker.broker.keys.rotate("RS256")
    second = tokens_for(broker, http)["access_token"]
    assert kid_of(second) == promoted != kid_of(first)
    assert app.get(second).status_code == 200
    assert key_fetches(app.counts) == {DISCOVERY: 1, JWKS: 1}

    # A second rotation signs with a key published after the app's fetch: unknown kid.
    # A burst of requests carrying it makes exactly one JWKS request between them.
    unseen, _ = broker.broker.keys.rotate("RS256")
    third = [tokens_for(broker, http, user)["access_token"] for user in ("alice", "bob")] * 4
    assert {kid_of(t) for t in third} == {unseen}
    with concurrent.futures.ThreadPoolExecutor(len(third)) as pool:
        statuses = list(pool.map(lambda t: app.get(t).status_code, third))
    assert statuses == [200] * len(third)
    assert key_fetches(app.counts) == {DISCOVERY: 1, JWKS: 2}

    # Tokens signed by the retired keys stay good until they expire.
    assert app.get(first).status_code == 200
    assert app.get(second).status_code == 200
    assert key_fetches(app.counts) == {DISCOVERY: 1, JWKS: 2}


# --- broker down ------------------------------------------------------------------------


def test_broker_down_cached_keys_then_clear_error(
    broker: RunningBroker,
    http: httpx.Client,
    app: ProtectedApp,
    vclock: ValidatorClock,
    validator: TokenValidator,
) -> None:
    alice = tokens_for(broker, http, "alice")["access_token"]
    bob = tokens_for(broker, http, "bob")["access_token"]
    assert app.get(alice).status_code == 200
    assert validator.validate(alice).sg_login == "alice"
    max_age = broker.settings.jwks_max_age
    max_stale = app.validator.jwks.max_stale

    broker.server.stop()
    with pytest.raises(httpx.ConnectError):
        http.get(JWKS)

    # Past the JWKS's freshness: the refetch (on the validator's thread) fails, the cached
    # keys keep serving a token neither validator has seen (same kid), so its signature
    # really is checked.
    vclock.offset = max_age + 1
    fetches = app.counts[JWKS] + app.counts[DISCOVERY]
    app.validator.refresh(force=False)
    assert app.counts[JWKS] + app.counts[DISCOVERY] == fetches + 1  # tried, failed
    assert app.get(bob).json()["sg_login"] == "bob"
    assert validator.validate(bob).sg_login == "bob"

    # Past the staleness bound: a clear error, not a 401 blaming the token.
    vclock.offset = max_age + max_stale + 1
    response = app.get(alice)
    assert response.status_code == 503, response.text
    assert response.headers["www-authenticate"].startswith('Bearer error="temporarily_unavailable"')
    assert response.headers["retry-after"]
    with pytest.raises(JWKSUnavailable) as raised:
        validator.validate(alice)
    assert not isinstance(raised.value, ValueError)


def test_broker_down_at_start_then_back(
    broker: RunningBroker, http: httpx.Client, vclock: ValidatorClock
) -> None:
    """No key set yet and the broker unreachable: 503 within the start-up wait (nothing
    stale to serve); once it is back the app recovers by itself at the next retry."""
    token = tokens_for(broker, http)["access_token"]
    port = broker.server.port
    broker.server.stop()
    counts: Counter[str] = Counter()
    fastapi_app = protected_app(broker.url, vclock, counts)
    with serve(fastapi_app) as server:
        app = ProtectedApp(server.url, fastapi_app, counts)
        first = app.get(token)
        assert first.status_code == 503, first.text
        assert first.headers["www-authenticate"].startswith(
            'Bearer error="temporarily_unavailable"'
        )

        broker.server = ServerThread(broker.app, port=port).start()  # same store, same keys
        # Within the retry interval the app does not hammer the broker...
        attempts = app.counts[DISCOVERY]
        app.validator.refresh(force=False)
        assert app.get(token).status_code == 503
        assert app.counts[DISCOVERY] == attempts
        # ...after it, the next cycle fetches, and requests succeed.
        vclock.offset = app.validator.jwks.retry_interval
        assert app.validator.refresh(force=False)
        response = app.get(token)
        assert response.status_code == 200, response.text
        assert response.json()["sg_login"] == "alice"
        assert app.counts[JWKS] == 1


# --- DNA ----------------------------------------------------------------------------------


def test_dna_adapter_from_env(
    broker: RunningBroker, http: httpx.Client, clock: MovableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROKER_ISSUER", broker.url)
    monkeypatch.setenv("BROKER_AUDIENCE", "dna-api")
    provider = BrokerAuthProvider.from_env()
    try:
        tokens = tokens_for(broker, http)
        claims = provider.validate_token(tokens["access_token"])
        # Every claim of the token: the three DNA reads, and what acting as the user needs.
        assert (
            claims.items()
            >= {
                "email": "alice@example.com",
                "sub": "101",
                "name": "Alice Artist",
                "sg_login": "alice",
                "sg_user_id": 101,
            }.items()
        )
        assert provider.get_user_email(tokens["access_token"]) == "alice@example.com"
        for bad in (
            tampered(broker, http, clock),
            tokens["refresh_token"],
            wrong_audience(broker, http, clock),
            "not-a-token",
        ):
            with pytest.raises(ValueError) as raised:
                provider.validate_token(bad)
            assert isinstance(raised.value, InvalidToken)
    finally:
        provider.validator.close()


def test_dna_adapter_audience_from_env(
    broker: RunningBroker, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BROKER_AUDIENCE is honoured: a provider for review-api refuses dna-api tokens."""
    monkeypatch.setenv("BROKER_ISSUER", broker.url)
    monkeypatch.setenv("BROKER_AUDIENCE", "review-api")
    provider = BrokerAuthProvider.from_env()
    try:
        with pytest.raises(WrongAudience):
            provider.validate_token(tokens_for(broker, http)["access_token"])
    finally:
        provider.validator.close()


# --- other integrations and algorithms ------------------------------------------------


def test_starlette_backend_against_the_broker(
    broker: RunningBroker, http: httpx.Client, clock: MovableClock, vclock: ValidatorClock
) -> None:
    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.user.display_name, "scopes": request.auth.scopes})

    with (
        httpx.Client(timeout=5) as jwks_client,
        TokenValidator(broker.url, "dna-api", http_client=jwks_client, clock=vclock) as validator,
    ):
        starlette_app = Starlette(
            routes=[Route("/whoami", requires("authenticated")(whoami))],
            middleware=[
                Middleware(
                    AuthenticationMiddleware,
                    backend=BrokerAuthBackend(validator),
                    on_error=on_auth_error,
                )
            ],
        )
        with serve(starlette_app) as server:
            token = tokens_for(broker, http)["access_token"]
            ok = httpx.get(f"{server.url}/whoami", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200, ok.text
            assert ok.json()["user"] == "Alice Artist"
            assert "authenticated" in ok.json()["scopes"]
            bad = httpx.get(
                f"{server.url}/whoami",
                headers={"Authorization": f"Bearer {tampered(broker, http, clock)}"},
            )
            assert bad.status_code == 401
            assert bad.json()["error"] == "invalid_token"
            assert bad.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
            assert httpx.get(f"{server.url}/whoami").status_code == 403  # Starlette's requires


def test_es256_broker(tmp_path: Path, clock: MovableClock) -> None:
    """A broker signing access tokens with ES256: the algorithm comes from the JWK."""
    with (
        broker_with_emulator(tmp_path, clock, signing_alg="ES256") as (running, _emu, _site),
        running.client() as http,
        httpx.Client(timeout=5) as jwks_client,
    ):
        token = tokens_for(running, http)["access_token"]
        assert unb64json(token.split(".")[0])["alg"] == "ES256"
        validator = TokenValidator(
            running.url, "dna-api", http_client=jwks_client, clock=ValidatorClock(clock)
        )
        assert validator.validate(token).sg_login == "alice"
        validator.close()
        head, payload, signature = token.split(".")
        forged = {**unb64json(payload), "sub": "102"}
        with pytest.raises(BadSignature):
            validator.validate(f"{head}.{b64json(forged)}.{signature}")


# --- ShotGrid as the user ---------------------------------------------------------------


def test_sudo_pool_sees_each_users_projects(
    env: tuple[RunningBroker, ShotGridEmulator, ServerThread],
    http: httpx.Client,
    validator: TokenValidator,
) -> None:
    broker, emulator, site = env
    pool = SudoConnectionPool(site.url, "token-broker", "token-broker-key")
    try:
        seen = {}
        for user in ("alice", "bob", "alice"):
            claims = validator.validate(tokens_for(broker, http, user)["access_token"])
            with pool.connection(claims) as sg:
                seen[user] = sorted(p["id"] for p in sg.find("Project", [], ["name"]))
                me = sg.find_one("HumanUser", [["login", "is", user]], ["login"])
                assert me is not None and me["login"] == user
        assert seen == {"alice": [201, 202], "bob": [202, 203]}
        assert pool.created == 2  # alice's connection was reused
        assert emulator.calls["api3:read"] > 0
    finally:
        pool.close()


# --- ShotGrid REST token through token exchange -------------------------------------------


@pytest.mark.parametrize(("user", "projects"), [("alice", [201, 202]), ("bob", [202, 203])])
def test_shotgrid_token_exchange_lists_only_the_users_projects(
    env: tuple[RunningBroker, ShotGridEmulator, ServerThread],
    http: httpx.Client,
    user: str,
    projects: list[int],
) -> None:
    broker, _emulator, site = env
    grants = http.get(DISCOVERY).json()["grant_types_supported"]
    if TOKEN_EXCHANGE_GRANT not in grants:  # CONTRACT.md: discovery lists it once it exists
        pytest.skip("the broker does not offer token exchange yet (not merged into main)")
    subject = tokens_for(broker, http, user)["access_token"]
    sg_token = exchange_for_shotgrid_token(
        subject,
        issuer=broker.url,
        client_id="dna-backend",
        client_secret="dna-backend-secret",
        http_client=http,
    )
    assert sg_token.issued_token_type == SHOTGRID_TOKEN_TYPE
    response = httpx.get(
        f"{site.url}/api/v1/entity/projects", headers=sg_token.authorization_header(), timeout=10
    )
    assert response.status_code == 200, response.text
    assert sorted(p["id"] for p in response.json()["data"]) == projects
