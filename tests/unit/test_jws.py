"""broker.tokens.jws against joserfc and PyJWT: the same tokens, the same verdicts.

RS256 (PKCS#1 v1.5) and HS256 signatures are deterministic, so tokens must be equal byte
for byte to joserfc's; ES256 signatures are randomised, so each side must accept the
other's. Every mutation of a token must be refused or accepted exactly as joserfc (told
the key's one algorithm, as the broker always tells it) refuses or accepts it."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from broker.store import open_store
from broker.tokens.crypto import Sealer
from broker.tokens.jws import AnyKey, JwsKey
from broker.tokens.keys import REFRESH_ALG, KeyManager
from tests.support.clock import MovableClock

CLAIMS: dict[str, Any] = {
    "iss": "http://127.0.0.1:8000",
    "sub": "101",
    "aud": "dna-api",
    "exp": 1795991512,
    "iat": 1795990912,
    "jti": "Nb7LmVEoUoH0cUNS8dVntQ",
    "scope": "openid offline_access",
    "name": "Zoë Ünïcode",
    "sg_user_id": 101,
    "act": {"sub": "dna-backend"},
}


def _keys() -> dict[str, AnyKey]:
    return {
        "RS256": RSAKey.generate_key(2048, parameters={"alg": "RS256"}, auto_kid=True),
        "ES256": ECKey.generate_key("P-256", parameters={"alg": "ES256"}, auto_kid=True),
        "HS256": OctKey.generate_key(256, parameters={"alg": "HS256"}, auto_kid=True),
    }


KEYS = _keys()
OTHER = _keys()


def ours(alg: str, keys: dict[str, AnyKey] = KEYS) -> JwsKey:
    key = keys[alg]
    assert key.kid is not None
    return JwsKey(key.kid, alg, key)


def joserfc_sign(alg: str, claims: dict[str, Any], typ: str) -> str:
    key = KEYS[alg]
    header = {"alg": alg, "typ": typ, "kid": key.kid}
    return jwt.encode(header, claims, key, algorithms=[alg])


def joserfc_verdict(alg: str, token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """What KeyManager.verify accepted before: joserfc's decode with the key's algorithm,
    and the header's alg equal to it."""
    try:
        decoded = jwt.decode(token, KEYS[alg], algorithms=[alg])
    except (JoseError, ValueError, RecursionError):
        return None
    if decoded.header.get("alg") != alg:
        return None
    return dict(decoded.header), dict(decoded.claims)


def our_verdict(alg: str, token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    try:
        return ours(alg).verify(token)
    except ValueError:
        return None


@pytest.mark.parametrize("alg", ["RS256", "HS256"])
@pytest.mark.parametrize("typ", ["at+jwt", "rt+jwt", "JWT"])
def test_deterministic_signatures_equal_joserfcs(alg: str, typ: str) -> None:
    assert ours(alg).sign(CLAIMS, typ) == joserfc_sign(alg, CLAIMS, typ)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "HS256"])
def test_each_side_reads_the_others_tokens(alg: str) -> None:
    mine = ours(alg).sign(CLAIMS, "at+jwt")
    theirs = joserfc_sign(alg, CLAIMS, "at+jwt")
    header, claims = ours(alg).verify(theirs)
    assert claims == CLAIMS and header == {"typ": "at+jwt", "alg": alg, "kid": KEYS[alg].kid}
    assert joserfc_verdict(alg, mine) == (header, CLAIMS)
    public: Any = KEYS[alg].get_op_key("verify")
    decoded = pyjwt.decode(
        mine, public, algorithms=[alg], options={"verify_exp": False}, audience="dna-api"
    )
    assert decoded == CLAIMS


@pytest.mark.parametrize("alg", ["RS256", "ES256", "HS256"])
def test_another_keys_token_is_refused(alg: str) -> None:
    forged = ours(alg, OTHER).sign(CLAIMS, "at+jwt")
    assert our_verdict(alg, forged) is None
    assert joserfc_verdict(alg, forged) is None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _variants(token: str, alg: str) -> list[str]:
    """Tampered, confused and malformed neighbours of a valid token."""
    head, payload, sig = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    other_alg = {"RS256": "HS256", "ES256": "RS256", "HS256": "RS256"}[alg]
    claims = dict(CLAIMS, sub="102")
    return [
        token,
        f"{head}.{payload}.",
        f"{head}.{_b64(json.dumps(claims).encode())}.{sig}",
        f"{_b64(json.dumps({**header, 'alg': other_alg}).encode())}.{payload}.{sig}",
        f"{_b64(json.dumps({**header, 'alg': 'none'}).encode())}.{payload}.",
        f"{_b64(json.dumps({**header, 'b64': False, 'crit': ['b64']}).encode())}.{payload}.{sig}",
        f"{head}.{payload}.{sig}=",
        f"{head}=.{payload}.{sig}",
        f"{head}.{payload}.{sig[:-2]}",
        f"{head}.{payload}",
        f"{head}.{payload}.{sig}.{sig}",
        f"{_b64(b'[1,2]')}.{payload}.{sig}",
        f"{head}.{_b64(b'[1,2]')}.{sig}",
        f"{head}.{_b64(b'not json')}.{sig}",
        f"{head}.{payload}.{sig.replace('A', '+')}",
        token.replace(".", ".\u00e9", 1),
        "",
    ]


@pytest.mark.parametrize("alg", ["RS256", "ES256", "HS256"])
@pytest.mark.parametrize("named", ["RS384", "HS256", "ES256", "none", None])
def test_a_header_naming_another_algorithm_is_refused_even_when_signed(
    alg: str, named: str | None
) -> None:
    """Signed with the right key, but its header names another algorithm (or none)."""
    key = ours(alg)
    key.sign(CLAIMS, "JWT")  # loads its signer
    header: dict[str, Any] = {"typ": "JWT", "kid": KEYS[alg].kid}
    if named is not None:
        header["alg"] = named
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(CLAIMS).encode())}"
    assert key._signer is not None
    token = f"{signing_input}.{_b64(key._signer(signing_input.encode()))}"
    expected = None if named != alg else ({**header}, CLAIMS)
    assert our_verdict(alg, token) == expected
    assert joserfc_verdict(alg, token) == expected


@pytest.mark.parametrize("alg", ["RS256", "ES256", "HS256"])
def test_verdicts_on_tampered_tokens_equal_joserfcs(alg: str) -> None:
    token = joserfc_sign(alg, CLAIMS, "rt+jwt")
    for variant in _variants(token, alg):
        assert our_verdict(alg, variant) == joserfc_verdict(alg, variant), variant


@settings(max_examples=200)
@given(
    st.sampled_from(["RS256", "ES256", "HS256"]),
    st.integers(min_value=0, max_value=400),
    st.sampled_from("AQgw-_.=+/ \u00e9xyz"),
)
def test_verdicts_on_one_changed_character_equal_joserfcs(alg: str, where: int, char: str) -> None:
    token = joserfc_sign(alg, {"sub": "101", "jti": "x"}, "rt+jwt")
    where %= len(token)
    variant = token[:where] + char + token[where + 1 :]
    assert our_verdict(alg, variant) == joserfc_verdict(alg, variant)


@given(st.text(max_size=60))
def test_garbage_is_refused_as_joserfc_refuses_it(text: str) -> None:
    for alg in ("HS256", "RS256"):
        assert our_verdict(alg, text) == joserfc_verdict(alg, text)


# --- the broker's own signing path, read by the libraries its relying parties use ---------


def _manager(tmp_path: Path, alg: str) -> KeyManager:
    store = open_store(f"sqlite:///{tmp_path / 'keys.db'}")
    km = KeyManager(store, Sealer([os.urandom(32)]), clock=MovableClock(), signing_alg=alg)
    km.ensure_keys()
    return km


def _tampered(token: str) -> list[str]:
    """A changed claim (signature kept), a changed signature, a header naming `none`."""
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    return [
        f"{head}.{_b64(json.dumps({**claims, 'sub': '102'}).encode())}.{sig}",
        f"{head}.{payload}.{flipped}",
        f"{_b64(json.dumps({**header, 'alg': 'none'}).encode())}.{payload}.",
    ]


@pytest.mark.parametrize(
    ("signing_alg", "token_alg", "typ"),
    [
        ("RS256", "RS256", "at+jwt"),
        ("RS256", "RS256", "JWT"),  # the ID token
        ("ES256", "ES256", "at+jwt"),
        ("ES256", "RS256", "JWT"),  # an ES256 deployment keeps RS256 ID tokens
    ],
)
def test_published_tokens_verify_with_pyjwt_and_joserfc_against_the_jwks(
    tmp_path: Path, signing_alg: str, token_alg: str, typ: str
) -> None:
    """What a relying party does: fetch the JWKS, pick the key by `kid`, verify. The
    header PyJWT reads is the one the broker wrote (alg, kid of the current key, typ);
    every tampered neighbour is refused by both libraries."""
    km = _manager(tmp_path, signing_alg)
    current = km.current(token_alg)
    token = km.sign(CLAIMS, typ, alg=token_alg)
    jwks = km.jwks()

    assert pyjwt.get_unverified_header(token) == {"typ": typ, "alg": token_alg, "kid": current.kid}
    pyjwk = pyjwt.PyJWKSet.from_dict(jwks)[current.kid]
    assert pyjwk.algorithm_name == token_alg
    options: Any = {"verify_exp": False}
    assert (
        pyjwt.decode(token, pyjwk.key, algorithms=[token_alg], options=options, audience="dna-api")
        == CLAIMS
    )
    keyset = KeySet.import_key_set(jwks)
    decoded = jwt.decode(token, keyset, algorithms=[token_alg])
    assert dict(decoded.header) == {"typ": typ, "alg": token_alg, "kid": current.kid}
    assert dict(decoded.claims) == CLAIMS

    for variant in _tampered(token):
        with pytest.raises(pyjwt.PyJWTError):
            pyjwt.decode(
                variant, pyjwk.key, algorithms=[token_alg], options=options, audience="dna-api"
            )
        with pytest.raises(JoseError):
            jwt.decode(variant, keyset, algorithms=[token_alg])
        with pytest.raises(ValueError):
            km.verify(variant, use="sig", typ=typ)


def test_refresh_tokens_verify_with_pyjwt_and_joserfc_under_the_private_key(
    tmp_path: Path,
) -> None:
    """Refresh tokens are HS256 under a key never published: read with that key."""
    km = _manager(tmp_path, "RS256")
    current = km.current(REFRESH_ALG, use="rt")
    token = km.sign_refresh(CLAIMS, "rt+jwt")
    assert current.kid not in {k["kid"] for k in km.jwks()["keys"]}
    assert pyjwt.get_unverified_header(token) == {
        "typ": "rt+jwt",
        "alg": REFRESH_ALG,
        "kid": current.kid,
    }
    secret: Any = current.key.get_op_key("verify")
    options: Any = {"verify_exp": False}
    decoded = pyjwt.decode(
        token, secret, algorithms=[REFRESH_ALG], options=options, audience="dna-api"
    )
    assert decoded == CLAIMS
    assert dict(jwt.decode(token, current.key, algorithms=[REFRESH_ALG]).claims) == CLAIMS
    assert km.verify(token, use="rt", typ="rt+jwt") == CLAIMS
    for variant in _tampered(token):
        with pytest.raises(pyjwt.PyJWTError):
            pyjwt.decode(
                variant, secret, algorithms=[REFRESH_ALG], options=options, audience="dna-api"
            )
        with pytest.raises(JoseError):
            jwt.decode(variant, current.key, algorithms=[REFRESH_ALG])
        with pytest.raises(ValueError):
            km.verify(variant, use="rt", typ="rt+jwt")
