"""verify_access_token: the pure function, against tokens minted and forged here."""

from __future__ import annotations

import random
from typing import Any

import pytest

from broker_client import (
    AccessTokenClaims,
    BadSignature,
    ExpiredToken,
    InvalidClaim,
    InvalidToken,
    KeySet,
    MalformedToken,
    NotYetValid,
    UnknownKey,
    UnsupportedAlgorithm,
    WrongAudience,
    WrongIssuer,
    WrongTokenType,
    verify_access_token,
)
from client_support import AUDIENCE, DROP, ISSUER, FakeBroker, FakeClock, forge, forge_hs256


def verify(broker: FakeBroker, token: Any, **kwargs: Any) -> AccessTokenClaims:
    keys = KeySet.from_jwks(broker.jwks())
    kwargs.setdefault("issuer", ISSUER)
    kwargs.setdefault("audience", AUDIENCE)
    return verify_access_token(token, keys, clock=broker.clock, **kwargs)


def test_accepts_a_good_rs256_token(broker: FakeBroker) -> None:
    claims = verify(broker, broker.mint())
    assert claims.sub == "101"
    assert claims.aud == ("dna-api",)
    assert claims.sg_login == "alice"
    assert claims.sg_user_id == 101
    assert claims.email == "alice@example.com"
    assert claims.name == "Alice Artist"
    assert claims.scopes == {"openid", "profile", "email"}
    assert claims.raw["client_id"] == "dna-cli"


def test_accepts_a_good_es256_token(broker: FakeBroker) -> None:
    broker.add_key("ec1", "EC")
    assert verify(broker, broker.mint()).sub == "101"


def test_accepts_bytes_and_audience_lists(broker: FakeBroker) -> None:
    token = broker.mint(aud=["review-api", "dna-api"])
    assert verify(broker, token.encode(), audience=["dna-api"]).aud == ("review-api", "dna-api")


def test_leeway_applies_to_exp(broker: FakeBroker, clock: FakeClock) -> None:
    token = broker.mint()
    clock.advance(600 + 29)
    assert verify(broker, token, leeway=30).sub == "101"
    with pytest.raises(ExpiredToken):
        verify(broker, token, leeway=0)


def test_the_algorithm_allowlist_comes_from_the_key_set(broker: FakeBroker) -> None:
    broker.add_key("ec1", "EC", activate=False)
    assert KeySet.from_jwks(broker.jwks()).algorithms == {"RS256", "ES256"}


def _header(broker: FakeBroker, **extra: Any) -> dict[str, Any]:
    return {"alg": "RS256", "typ": "at+jwt", "kid": broker.active, **extra}


def _resigned_with_other_key(broker: FakeBroker) -> str:
    other = FakeBroker(broker.clock)
    other.add_key("intruder")
    other.keys[broker.active] = other.keys["intruder"]
    return other.mint(kid=broker.active)


def _tampered(broker: FakeBroker) -> str:
    header, _payload, signature = broker.mint().split(".")
    evil = forge({}, broker.claims(sub="102")).split(".")[1]
    return f"{header}.{evil}.{signature}"


REJECTIONS: list[tuple[str, Any, type[InvalidToken]]] = [
    ("expired", lambda b: b.mint(exp=int(b.clock()) - 3600), ExpiredToken),
    ("wrong audience", lambda b: b.mint(aud="review-api"), WrongAudience),
    ("wrong issuer", lambda b: b.mint(iss="https://evil.test"), WrongIssuer),
    ("refresh token", lambda b: b.mint(typ="rt+jwt", aud=ISSUER), WrongTokenType),
    ("plain JWT typ", lambda b: b.mint(typ="JWT"), WrongTokenType),
    ("no typ", lambda b: forge({"alg": "RS256", "kid": b.active}, b.claims()), WrongTokenType),
    ("alg none", lambda b: forge(_header(b, alg="none"), b.claims()), UnsupportedAlgorithm),
    ("alg None", lambda b: forge(_header(b, alg="None"), b.claims()), UnsupportedAlgorithm),
    (
        "HS256 keyed with the public key",
        lambda b: forge_hs256(_header(b, alg="HS256"), b.claims(), b.public_pem(b.active)),
        UnsupportedAlgorithm,
    ),
    (
        "ES256 header on an RSA key",
        lambda b: forge(_header(b, alg="ES256"), b.claims()),
        UnsupportedAlgorithm,
    ),
    ("tampered payload", _tampered, BadSignature),
    ("signed by another key", _resigned_with_other_key, BadSignature),
    ("no signature", lambda b: b.mint().rpartition(".")[0] + ".", BadSignature),
    (
        "unknown kid",
        lambda b: (
            b.mint(kid=b.add_key("k2", activate=False)) and forge(_header(b, kid="zz"), b.claims())
        ),
        UnknownKey,
    ),
    ("no kid", lambda b: forge({"alg": "RS256", "typ": "at+jwt"}, b.claims()), MalformedToken),
    ("crit header", lambda b: forge(_header(b, crit=["exp"]), b.claims()), MalformedToken),
    ("nbf in the future", lambda b: b.mint(nbf=int(b.clock()) + 3600), NotYetValid),
    ("iat in the future", lambda b: b.mint(iat=int(b.clock()) + 3600), NotYetValid),
    *[
        (f"missing {claim}", lambda b, c=claim: b.mint(**{c: DROP}), InvalidClaim)
        for claim in ("iss", "sub", "exp", "iat", "jti", "client_id", "aud")
    ],
    ("sub is an int", lambda b: b.mint(sub=101), InvalidClaim),
    ("sg_user_id is a string", lambda b: b.mint(sg_user_id="101"), InvalidClaim),
    ("sg_user_id is a bool", lambda b: b.mint(sg_user_id=True), InvalidClaim),
    ("exp is a string", lambda b: b.mint(exp="soon"), InvalidClaim),
    ("exp is a bool", lambda b: b.mint(exp=True), InvalidClaim),
    ("aud is a number", lambda b: b.mint(aud=5), InvalidClaim),
    ("aud list with a number", lambda b: b.mint(aud=["dna-api", 5]), InvalidClaim),
    ("email is a list", lambda b: b.mint(email=["a@b"]), InvalidClaim),
    ("scope is a list", lambda b: b.mint(scope=["openid"]), InvalidClaim),
    ("oversized", lambda b: b.mint(name="x" * 9000), MalformedToken),
    ("empty", lambda b: "", MalformedToken),
    ("two segments", lambda b: "abc.def", MalformedToken),
    ("four segments", lambda b: b.mint() + ".abc", MalformedToken),
    ("dots only", lambda b: "...", MalformedToken),
    ("not base64", lambda b: "@@@.###.$$$", MalformedToken),
    ("padded base64", lambda b: b.mint().replace(".", "=.", 1), MalformedToken),
    ("non-ascii", lambda b: "é.é.é", MalformedToken),
    ("header not JSON", lambda b: "bm90IGpzb24." + b.mint().split(".", 1)[1], MalformedToken),
    ("header a JSON list", lambda b: "WzFd." + b.mint().split(".", 1)[1], MalformedToken),
    ("payload a JSON list", lambda b: b.mint().split(".")[0] + ".WzFd.AAAA", BadSignature),
    ("not a string", lambda b: 12345, MalformedToken),
    ("None", lambda b: None, MalformedToken),
]


@pytest.mark.parametrize(
    ("make", "error"), [(m, e) for _, m, e in REJECTIONS], ids=[n for n, _, _ in REJECTIONS]
)
def test_rejects(broker: FakeBroker, make: Any, error: type[InvalidToken]) -> None:
    token = make(broker)
    with pytest.raises(error) as caught:
        verify(broker, token)
    assert isinstance(caught.value, ValueError)
    assert caught.value.error == "invalid_token"


def test_required_claims_are_configurable(broker: FakeBroker) -> None:
    token = broker.mint(email=DROP)
    assert verify(broker, token).email is None
    with pytest.raises(InvalidClaim) as caught:
        verify(broker, token, required_claims={"iss", "sub", "aud", "exp", "email"})
    assert caught.value.claim == "email"


def test_garbage_only_ever_raises_invalid_token(broker: FakeBroker) -> None:
    good = broker.mint()
    rng = random.Random(1234)
    alphabet = "ABCxyz0189-_.=+/ é\x00"
    for _ in range(2000):
        if rng.random() < 0.5:
            chars = list(good)
            for _ in range(rng.randint(1, 5)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            token = "".join(chars)
        else:
            token = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        if token == good:
            continue
        with pytest.raises(InvalidToken):
            verify(broker, token)


JWKS_SKIPPED: list[tuple[str, dict[str, Any]]] = [
    ("oct key", {"kty": "oct", "kid": "h", "k": "c2VjcmV0"}),
    ("encryption key", {"use": "enc"}),
    ("RS384", {"alg": "RS384"}),
    ("no kid", {"kid": None}),
    ("bad n", {"n": "!!"}),
    ("verify not allowed", {"key_ops": ["sign"]}),
]


@pytest.mark.parametrize(("change"), [c for _, c in JWKS_SKIPPED], ids=[n for n, _ in JWKS_SKIPPED])
def test_key_set_skips_keys_it_must_not_use(broker: FakeBroker, change: dict[str, Any]) -> None:
    jwk = {**broker.jwks()["keys"][0], **change}
    jwk = {k: v for k, v in jwk.items() if v is not None}
    assert len(KeySet.from_jwks({"keys": [jwk]})) == 0


def test_key_set_skips_small_rsa_keys() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from client_support import public_jwk

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert len(KeySet.from_jwks({"keys": [public_jwk("small", small)]})) == 0


@pytest.mark.parametrize("document", [{}, {"keys": "x"}, [], None])
def test_key_set_rejects_documents_without_keys(document: Any) -> None:
    with pytest.raises(ValueError):
        KeySet.from_jwks(document)


# --- refusals name the real cause (the message is the feature here) -----------------------


def _id_token(b: FakeBroker) -> str:
    claims = {
        "iss": ISSUER,
        "sub": "101",
        "aud": "dna-frontend",
        "azp": "dna-frontend",
        "exp": int(b.clock()) + 600,
        "iat": int(b.clock()),
        "nonce": "n-0S6_WzA2Mj",
        "sid": "session-1",
    }
    return b.sign(claims, "JWT")


CAUSES: list[tuple[str, Any, str]] = [
    (
        "broker refresh token (HS256, rt+jwt)",
        lambda b: forge_hs256(
            {"alg": "HS256", "typ": "rt+jwt", "kid": "rt-1"}, b.claims(aud=ISSUER), b"secret"
        ),
        "the token is a refresh token, not an access token",
    ),
    (
        "refresh token signed like an access token",
        lambda b: b.mint(typ="rt+jwt", aud=ISSUER),
        "the token is a refresh token, not an access token",
    ),
    ("ID token", _id_token, "the token is an ID token, not an access token"),
    (
        "untyped ID token",
        lambda b: forge({"alg": "RS256", "kid": b.active}, {"aud": "x", "sub": "1", "nonce": "n"}),
        "the token is an ID token, not an access token",
    ),
    (
        "logout token",
        lambda b: b.logout_token(),
        "the token is a logout token, not an access token",
    ),
    (
        "some other JWT",
        lambda b: b.mint(typ="JWT"),
        "the token is not an access token (typ must be at+jwt)",
    ),
    (
        "HS256 access token",
        lambda b: forge_hs256(_header(b, alg="HS256"), b.claims(), b.public_pem(b.active)),
        "the token's algorithm is not allowed",
    ),
    (
        "alg none access token",
        lambda b: forge(_header(b, alg="none"), b.claims()),
        "the token's algorithm is not allowed",
    ),
]


@pytest.mark.parametrize(
    ("make", "message"), [(m, t) for _, m, t in CAUSES], ids=[n for n, _, _ in CAUSES]
)
def test_refusals_name_the_real_cause(broker: FakeBroker, make: Any, message: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        verify(broker, make(broker))
    assert caught.value.description == message
    expected = UnsupportedAlgorithm if "algorithm" in message else WrongTokenType
    assert type(caught.value) is expected
