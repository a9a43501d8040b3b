"""Token introspection (RFC 7662) and its JWT answers (RFC 9701) at `/introspect`,
against a real broker + emulator: every token state in one table."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey

from broker.tokens.secrets import new_token_id
from tests.support.broker import RunningBroker
from tests.support.clock import MovableClock
from tests.support.services import (
    BACKEND,
    add_confidential_client,
    broker,
    claims_of,
    clock,
    env,
    exchange,
    http,
    introspect,
    login,
    revoke,
)

__all__ = ["broker", "clock", "env", "http"]

pytestmark = pytest.mark.timeout(60)

Case = Callable[[RunningBroker, httpx.Client, MovableClock], tuple[str, bool]]


def _access(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    return login(b, h)["access_token"], True


def _refresh(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    return login(b, h)["refresh_token"], True


def _expired_access(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    token = login(b, h)["access_token"]
    c.advance(601)
    return token, False


def _revoked_access(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    token = login(b, h)["access_token"]
    assert revoke(h, token).status_code == 200
    return token, False


def _logged_out(kind: str) -> Case:
    def case(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
        tokens = login(b, h)
        sid = claims_of(tokens["access_token"])["sid"]
        assert b.broker.sessions.end_session(sid, "logout")
        return tokens[kind], False

    return case


def _reused_family(kind: str) -> Case:
    """The first refresh token replayed past the grace: the whole family dies."""

    def case(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
        first = login(b, h)
        second = b.refresh(h, first["refresh_token"]).json()
        c.advance(6)
        assert b.refresh(h, first["refresh_token"]).json()["error"] == "invalid_grant"
        return second[kind], False

    return case


def _used_refresh(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    first = login(b, h)
    assert b.refresh(h, first["refresh_token"]).status_code == 200
    c.advance(6)
    return first["refresh_token"], False


def _rotated_refresh(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    first = login(b, h)
    second = b.refresh(h, first["refresh_token"]).json()
    c.advance(6)
    return second["refresh_token"], True


def _revoked_refresh(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    token = login(b, h)["refresh_token"]
    assert revoke(h, token).status_code == 200
    return token, False


def _idle_refresh(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    token = login(b, h)["refresh_token"]
    c.advance(b.settings.refresh_idle_ttl + 1)
    return token, False


def _client_token(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    r = h.post("/token", data={"grant_type": "client_credentials"}, auth=BACKEND)
    return r.json()["access_token"], True


def _exchanged(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    subject = login(b, h)["access_token"]
    return exchange(h, subject, audience="review-api").json()["access_token"], True


def _id_token(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    return login(b, h, scope="openid profile")["id_token"], False


def _long_lived(b: RunningBroker, h: httpx.Client) -> str:
    """An access token signed by the broker's current key that outlives key retirement."""
    claims = claims_of(login(b, h)["access_token"])
    claims.update(exp=claims["exp"] + 7200, jti=new_token_id())
    token: str = b.broker.keys.sign(claims, "at+jwt")
    return token


def _kept_key(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    token = _long_lived(b, h)
    c.advance(1000)
    return token, True


def _dropped_key(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    token = _long_lived(b, h)
    old_kid = jwt.get_unverified_header(token)["kid"]
    b.broker.keys.rotate()
    assert b.broker.keys.retire(old_kid)
    c.advance(1000)  # past drop_after (access TTL + JWKS max-age)
    return token, False


def _foreign_key(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    claims = claims_of(login(b, h)["access_token"])
    key = RSAKey.generate_key(2048, parameters={"alg": "RS256"}, auto_kid=True)
    header = {"alg": "RS256", "typ": "at+jwt", "kid": key.kid}
    return jose_jwt.encode(header, claims, key, algorithms=["RS256"]), False


def _wrong_issuer(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    claims = claims_of(login(b, h)["access_token"])
    claims.update(iss="https://evil.example", jti=new_token_id())
    return b.broker.keys.sign(claims, "at+jwt"), False


def _tampered(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
    head, body, sig = login(b, h)["access_token"].split(".")
    return f"{head}.{body}.{sig[:-4]}AAAA", False


def _literal(value: str) -> Case:
    def case(b: RunningBroker, h: httpx.Client, c: MovableClock) -> tuple[str, bool]:
        return value, False

    return case


CASES: dict[str, Case] = {
    "access-active": _access,
    "access-expired": _expired_access,
    "access-revoked-by-jti": _revoked_access,
    "access-session-logged-out": _logged_out("access_token"),
    "access-family-revoked-by-reuse": _reused_family("access_token"),
    "access-client-credentials": _client_token,
    "access-exchanged": _exchanged,
    "access-key-rotated-but-kept": _kept_key,
    "access-key-dropped": _dropped_key,
    "access-foreign-key": _foreign_key,
    "access-wrong-issuer": _wrong_issuer,
    "access-tampered": _tampered,
    "id-token": _id_token,
    "refresh-active": _refresh,
    "refresh-rotated-successor": _rotated_refresh,
    "refresh-used-past-grace": _used_refresh,
    "refresh-revoked": _revoked_refresh,
    "refresh-idle-expired": _idle_refresh,
    "refresh-session-logged-out": _logged_out("refresh_token"),
    "refresh-family-revoked-by-reuse": _reused_family("refresh_token"),
    "malformed-garbage": _literal("garbage"),
    "malformed-three-dots": _literal("a.b.c"),
    "malformed-alg-none": _literal("eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.e30."),
    "malformed-empty": _literal(""),
    "malformed-huge": _literal("x" * 10000),
}


@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_every_token_state(
    broker: RunningBroker,
    http: httpx.Client,
    clock: MovableClock,
    case: str,
    hint: str | None,
) -> None:
    token, active = CASES[case](broker, http, clock)
    extra = {"token_type_hint": hint} if hint else {}
    response = introspect(http, token, **extra)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["active"] is active
    if not active:
        assert body == {"active": False}
        return
    for field in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti", "token_type"):
        assert field in body, field
    # RFC 7662 §2.2: a resource server may rely on token_type to tell tokens apart.
    is_refresh = claims_of(token).get("aud") == broker.url
    assert body["token_type"] == ("refresh_token" if is_refresh else "Bearer")
    assert body["iss"] == broker.url
    assert body["exp"] > int(clock().timestamp())


def test_active_access_token_fields(broker: RunningBroker, http: httpx.Client) -> None:
    token = login(broker, http)["access_token"]
    body = introspect(http, token).json()
    claims = claims_of(token)
    assert body["active"] is True
    assert body["token_type"] == "Bearer"
    assert body["username"] == "alice"
    assert body["client_id"] == "dna-cli"
    assert body["sub"] == "101"
    assert body["aud"] == "dna-api"
    assert body["sg_user_id"] == 101
    assert body["sid"] == claims["sid"] and body["fam"] == claims["fam"]
    assert {k: body[k] for k in claims} == claims


def test_active_refresh_token_fields(broker: RunningBroker, http: httpx.Client) -> None:
    tokens = login(broker, http)
    body = introspect(http, tokens["refresh_token"]).json()
    access = claims_of(tokens["access_token"])
    assert body["active"] is True
    assert body["token_type"] == "refresh_token"  # never to be taken for an access token
    assert body["client_id"] == "dna-cli"
    assert body["username"] == "alice"
    assert body["sub"] == "101"
    assert body["aud"] == broker.url
    assert body["sid"] == access["sid"] and body["fam"] == access["fam"]
    assert body["jti"] == claims_of(tokens["refresh_token"])["jti"]


def test_jwt_response(broker: RunningBroker, http: httpx.Client) -> None:
    token = login(broker, http)["access_token"]
    response = introspect(http, token, headers={"Accept": "application/token-introspection+jwt"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/token-introspection+jwt"
    signed = response.text
    assert jwt.get_unverified_header(signed)["typ"] == "token-introspection+jwt"
    jwks = jwt.PyJWKClient(f"{broker.url}/jwks.json")
    key = jwks.get_signing_key_from_jwt(signed)
    claims = jwt.decode(
        signed,
        key.key,
        algorithms=["RS256"],
        audience="dna-backend",
        issuer=broker.url,
        options={"verify_iat": False},
    )
    assert claims["token_introspection"]["active"] is True
    assert claims["token_introspection"]["sub"] == "101"
    assert claims["token_introspection"]["jti"] == claims_of(token)["jti"]


def test_jwt_response_for_an_inactive_token(http: httpx.Client) -> None:
    response = introspect(
        http, "garbage", headers={"Accept": "text/html, application/token-introspection+jwt"}
    )
    assert response.status_code == 200
    assert claims_of(response.text)["token_introspection"] == {"active": False}


def test_the_check_is_live_not_cached(
    broker: RunningBroker, http: httpx.Client, clock: MovableClock
) -> None:
    tokens = login(broker, http)
    assert introspect(http, tokens["access_token"]).json()["active"] is True
    clock.advance(599)
    assert introspect(http, tokens["access_token"]).json()["active"] is True
    clock.advance(1)
    assert introspect(http, tokens["access_token"]).json()["active"] is False


@pytest.mark.parametrize(
    ("data", "auth", "status", "error"),
    [
        ({"token": "x"}, None, 401, "invalid_client"),  # no authentication
        ({"token": "x", "client_id": "dna-cli"}, None, 401, "invalid_client"),  # public
        ({"token": "x", "client_id": "dna-backend"}, None, 401, "invalid_client"),  # no secret
        ({"token": "x"}, ("dna-backend", "wrong"), 401, "invalid_client"),
        ({"token": "x", "client_id": "nobody", "client_secret": "x"}, None, 401, "invalid_client"),
        ({"token": "x"}, ("reporting", "reporting-secret"), 400, "unauthorized_client"),
        ({}, BACKEND, 400, "invalid_request"),  # no token
    ],
)
def test_request_errors(
    broker: RunningBroker,
    http: httpx.Client,
    data: dict[str, str],
    auth: tuple[str, str] | None,
    status: int,
    error: str,
) -> None:
    add_confidential_client(
        broker, "reporting", "reporting-secret", grant_types=("client_credentials",)
    )
    response = http.post("/introspect", data=data, auth=auth)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    if status == 401 and auth is not None:
        assert response.headers["www-authenticate"].startswith("Basic")
    if status == 401 and data.get("client_id") != "nobody":
        # A sentence a person can act on, not Authlib's Python list of method names.
        description = response.json()["error_description"]
        assert description.startswith("Client authentication failed"), description
        assert "client_secret_basic, client_secret_post." in description
        assert "[" not in description


def test_an_unknown_hint_is_ignored(broker: RunningBroker, http: httpx.Client) -> None:
    tokens = login(broker, http)
    for token in tokens["access_token"], tokens["refresh_token"]:
        body = introspect(http, token, token_type_hint="id_token").json()
        assert body["active"] is True


def test_client_secret_post_works(broker: RunningBroker, http: httpx.Client) -> None:
    token = login(broker, http)["access_token"]
    response = http.post(
        "/introspect",
        data={"token": token, "client_id": BACKEND[0], "client_secret": BACKEND[1]},
    )
    assert response.json()["active"] is True
