"""The back-channel logout receiver (OIDC Back-Channel Logout 1.0 §2.5-2.8) under uvicorn:
a valid logout token ends the session at once; every invalid variant is a 400."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from broker_client import TokenRevoked, TokenValidator
from broker_client.integrations.backchannel import backchannel_logout_route
from client_servers import free_port, serve
from client_support import DROP, LOGOUT_EVENT, FakeBroker, FakeClock, b64, private_key

PATH = "/auth/backchannel-logout"


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[FakeBroker, TokenValidator, str]]:
    """One broker, validator and receiver for the module (servers are slow to stop);
    tests that end a session use a session id of their own."""
    clock = FakeClock()
    broker = FakeBroker(clock)
    with broker.served() as url, TokenValidator(url, "dna-api", clock=clock) as validator:
        assert validator.refresher.ready.wait(5)
        app = Starlette(routes=[backchannel_logout_route(validator, "dna-backend", PATH)])
        with serve(app) as server:
            yield broker, validator, server.url + PATH


@pytest.fixture
def broker(env: tuple[FakeBroker, TokenValidator, str]) -> FakeBroker:
    return env[0]


@pytest.fixture
def validator(env: tuple[FakeBroker, TokenValidator, str]) -> TokenValidator:
    return env[1]


@pytest.fixture
def receiver(env: tuple[FakeBroker, TokenValidator, str]) -> str:
    return env[2]


def post(url: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
    if token is not None:
        kwargs.setdefault("data", {"logout_token": token})
    return httpx.post(url, timeout=10, **kwargs)


def test_a_valid_logout_token_ends_the_session_at_once(
    receiver: str, validator: TokenValidator, broker: FakeBroker
) -> None:
    token = broker.mint(sid="ending")
    other = broker.mint(sid="going-on")
    assert validator.validate(token).sub == "101"
    response = post(receiver, broker.logout_token(sid="ending"))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    with pytest.raises(TokenRevoked) as caught:
        validator.validate(token)  # no feed poll needed
    assert caught.value.kind == "sid"
    assert validator.validate(other).sub == "101"
    assert validator.revocations is not None
    deadline = validator.revocations.deadline("sid", "ending")
    assert deadline == broker.clock() + 3600 + validator.leeway  # the default lifetime


def test_a_replayed_logout_token_is_refused(receiver: str, broker: FakeBroker) -> None:
    token = broker.logout_token(sid="replayed")
    assert post(receiver, token).status_code == 200
    response = post(receiver, token)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def _unsigned(broker: FakeBroker, **header: Any) -> str:
    _head, payload, _ = broker.logout_token().split(".")
    return b64(json.dumps({"typ": "logout+jwt", "kid": "k1", **header}).encode()) + f".{payload}."


def _tampered(broker: FakeBroker) -> str:
    head, payload, signature = broker.logout_token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sid"] = "someone-else"
    return f"{head}.{b64(json.dumps(claims).encode())}.{signature}"


def _stranger(broker: FakeBroker) -> str:
    stranger = FakeBroker(broker.clock, issuer=broker.issuer)
    stranger.keys = {"k9": private_key("k9")}
    stranger.active = "k9"
    return stranger.logout_token()


def now(b: FakeBroker) -> int:
    return int(b.clock())


INVALID: list[tuple[str, Callable[[FakeBroker], str]]] = [
    ("access token", lambda b: b.mint()),
    ("id token typ", lambda b: b.logout_token(typ="JWT")),
    ("no typ", lambda b: b.logout_token(typ="")),
    ("tampered", _tampered),
    ("unknown key", _stranger),
    ("alg none", lambda b: _unsigned(b, alg="none")),
    ("not a jwt", lambda b: "not-a-jwt"),
    ("other issuer", lambda b: b.logout_token(iss="https://evil.test")),
    ("other audience", lambda b: b.logout_token(aud="dna-frontend")),
    ("audience list without us", lambda b: b.logout_token(aud=["a", "b"])),
    ("expired", lambda b: b.logout_token(iat=now(b) - 200, exp=now(b) - 80)),
    ("issued in the future", lambda b: b.logout_token(iat=now(b) + 600, exp=now(b) + 720)),
    ("too old", lambda b: b.logout_token(iat=now(b) - 3600, exp=now(b) + 60)),
    ("no iat", lambda b: b.logout_token(iat=DROP)),
    ("no exp", lambda b: b.logout_token(exp=DROP)),
    ("no events", lambda b: b.logout_token(events=DROP)),
    ("other event", lambda b: b.logout_token(events={"urn:other": {}})),
    ("event not an object", lambda b: b.logout_token(events={LOGOUT_EVENT: "yes"})),
    ("nonce", lambda b: b.logout_token(nonce="n-0S6_WzA2Mj")),
    ("sub only", lambda b: b.logout_token(sid=DROP)),
    ("neither sid nor sub", lambda b: b.logout_token(sid=DROP, sub=DROP)),
    ("no jti", lambda b: b.logout_token(jti=DROP)),
]


@pytest.mark.parametrize("make", [m for _, m in INVALID], ids=[n for n, _ in INVALID])
def test_invalid_logout_tokens_are_400(
    receiver: str, validator: TokenValidator, broker: FakeBroker, make: Callable[..., str]
) -> None:
    response = post(receiver, make(broker))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert response.headers["cache-control"] == "no-store"
    assert validator.revocations is not None
    assert validator.revocations.deadline("sid", "session-1") is None  # nothing was revoked
    assert validator.validate(broker.mint()).sub == "101"


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {},
        {"data": {"token": "x"}},
        {"content": b"logout_token=a&logout_token=b"},
        {"json": {"logout_token": "x"}},
        {"content": b"logout_token=%ff%fe", "headers": {"content-type": "text/plain"}},
    ],
    ids=["no body", "no logout_token", "two logout_tokens", "json", "wrong content type"],
)
def test_malformed_requests_are_400(receiver: str, request_kwargs: dict[str, Any]) -> None:
    if "content" in request_kwargs:
        request_kwargs.setdefault("headers", {"content-type": "application/x-www-form-urlencoded"})
    response = post(receiver, **request_kwargs)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_only_post(receiver: str) -> None:
    assert httpx.get(receiver).status_code == 405


def test_keys_unavailable_is_503(clock: FakeClock) -> None:
    issuer = f"http://127.0.0.1:{free_port()}"  # nobody listens
    broker = FakeBroker(clock, issuer=issuer)
    with TokenValidator(issuer, clock=clock, startup_wait=0.2) as validator:
        app = Starlette(routes=[backchannel_logout_route(lambda: validator, "dna-backend")])
        with serve(app) as server:
            response = post(server.url + PATH, broker.logout_token())
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["cache-control"] == "no-store"
