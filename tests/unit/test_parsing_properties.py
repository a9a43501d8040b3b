"""Property tests for every parser of untrusted input: form bodies and query strings,
HTTP Basic client credentials, JWTs (KeyManager.verify, validate_access_token) and
redirect URI matching. Whatever the input, the outcome is a result or the documented
error (InvalidRequestError / InvalidClientError / ValueError / InactiveToken), never
anything else, so nothing reaches the client as a 500."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from authlib.oauth2.rfc6749 import InvalidClientError, InvalidRequestError
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from broker.components import key_manager, sealer_for
from broker.http.oauth import (
    BodyTooLarge,
    check_basic_authorization,
    parse_pairs,
    read_form,
    reject_duplicates,
    safe_description,
)
from broker.redirects import redirect_uri_allowed
from broker.settings import load_settings
from broker.store import Store, open_store
from broker.tokens.access import InactiveToken, validate_access_token
from broker.tokens.keys import KeyManager
from tests.support.broker import new_kek
from tests.support.clock import MovableClock

FAST = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

# --- form bodies and query strings ---------------------------------------------------------


@FAST
@given(st.text(max_size=400))
def test_parse_pairs_and_duplicates(raw: str) -> None:
    try:
        pairs = parse_pairs(raw, what="form body")
        reject_duplicates(pairs)
    except InvalidRequestError as err:
        assert err.error == "invalid_request"


def _request(body: bytes, content_type: str | None, declared: str | None) -> Request:
    headers = []
    if content_type is not None:
        headers.append((b"content-type", content_type.encode("latin-1")))
    if declared is not None:
        headers.append((b"content-length", declared.encode("latin-1")))
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    scope = {"type": "http", "method": "POST", "headers": headers, "path": "/token"}
    return Request(scope, receive)


@FAST
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.lists(st.tuples(st.text(max_size=20), st.text(max_size=20)), max_size=80).map(
            lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode()
        ),
    ),
    content_type=st.one_of(
        st.none(),
        st.just("application/x-www-form-urlencoded"),
        st.just("application/x-www-form-urlencoded; charset=utf-8"),
        st.text(alphabet=st.characters(max_codepoint=255), max_size=40),
    ),
    declared=st.one_of(
        st.none(),
        st.integers(-5, 10**30).map(str),
        st.text(alphabet=st.characters(max_codepoint=255), max_size=10),
    ),
)
def test_read_form(body: bytes, content_type: str | None, declared: str | None) -> None:
    request = _request(body, content_type, declared)
    try:
        pairs = asyncio.run(read_form(request, 256))
    except (InvalidRequestError, BodyTooLarge):
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in pairs)
    assert len({k for k, _ in pairs}) == len(pairs)


@FAST
@given(st.text())
def test_error_descriptions_are_rfc_ascii(text: str) -> None:
    cleaned = safe_description(text)
    assert all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in cleaned)


# --- HTTP Basic client authentication --------------------------------------------------------

basic_payloads = st.one_of(
    st.text(alphabet=st.characters(max_codepoint=0x10FFFF), max_size=60),
    st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),
    st.tuples(st.text(max_size=20), st.text(max_size=20)).map(
        lambda p: base64.b64encode(f"{p[0]}:{p[1]}".encode()).decode()
    ),
)


@FAST
@given(
    scheme=st.sampled_from(["Basic", "basic", "BASIC", "Bearer", "", "Basic\t"]),
    payload=basic_payloads,
)
def test_basic_authorization(scheme: str, payload: str) -> None:
    # Header values reach us as latin-1 decoded text (ASGI gives bytes).
    value = f"{scheme} {payload}".encode("utf-8", "surrogatepass").decode("latin-1")
    headers = {"Authorization": value}
    try:
        check_basic_authorization(headers)
    except InvalidClientError as err:
        assert err.status_code == 401
        return
    client_id, secret = extract_basic_authorization(headers)
    assert client_id is None or isinstance(client_id, str)
    assert secret is None or isinstance(secret, str)


# --- JWTs --------------------------------------------------------------------------------------


@dataclass
class Broker:
    """The parts token validation reads: the keys and the store."""

    keys: KeyManager
    store: Store
    issuer: str
    clock: MovableClock


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    tmp: Path = tmp_path_factory.mktemp("props")
    settings_ = load_settings(issuer="http://127.0.0.1:9", secret_key=new_kek())
    store = open_store(f"sqlite:///{tmp / 'broker.db'}")
    clock = MovableClock()
    keys = key_manager(settings_, store, sealer_for(settings_), clock)
    keys.ensure_keys()
    try:
        yield Broker(keys, store, "http://127.0.0.1:9", clock)
    finally:
        store.close()


def validate(broker: Broker, token: str) -> dict[str, Any]:
    return validate_access_token(broker.keys, broker.store, broker.issuer, broker.clock(), token)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**80), max_value=10**80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=30),
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

segments = st.one_of(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.", max_size=60
    ),
    json_values.map(lambda v: b64(json.dumps(v).encode())),
    st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "b64", "jku", "x5u", "zip"]), json_values
    ).map(lambda d: b64(json.dumps(d).encode())),
    st.integers(min_value=1, max_value=4000).map(lambda n: b64(nested(n).encode())),
    st.just(b64(b'{"exp": 1e999, "iat": 99999999999999999999999999999}')),
    st.binary(max_size=60).map(b64),
)


def tokens_from(broker_: Broker) -> st.SearchStrategy[str]:
    kid = broker_.keys.current().kid
    header_with_kid = st.sampled_from(["at+jwt", "rt+jwt", "JWT", None]).map(
        lambda typ: b64(json.dumps({"alg": "RS256", "kid": kid, "typ": typ}).encode())
    )
    return st.one_of(
        st.text(max_size=200),
        st.lists(segments, min_size=0, max_size=6).map(".".join),
        st.tuples(header_with_kid, segments, segments).map(".".join),
        st.integers(min_value=8000, max_value=20000).map(lambda n: "a" * n + ".b.c"),
    )


def test_verify_raises_only_value_error(broker: Broker) -> None:
    @FAST
    @given(
        tokens_from(broker), st.sampled_from(["sig", "rt"]), st.sampled_from(["at+jwt", "rt+jwt"])
    )
    def run(token: str, use: str, typ: str) -> None:
        with contextlib.suppress(ValueError):
            broker.keys.verify(token, use=use, typ=typ)

    run()


def test_validate_access_token_raises_only_inactive(broker: Broker) -> None:
    @FAST
    @given(tokens_from(broker))
    def run(token: str) -> None:
        with contextlib.suppress(InactiveToken):
            validate(broker, token)

    run()


def test_validate_access_token_with_valid_signature_and_odd_claims(broker: Broker) -> None:
    """Signed by the broker's own key, so the claim checks themselves are fuzzed."""

    @FAST
    @given(
        st.dictionaries(
            st.sampled_from(["iss", "exp", "iat", "jti", "sid", "fam", "sub", "aud"]), json_values
        )
    )
    def run(claims: dict[str, Any]) -> None:
        try:
            token = broker.keys.sign(claims, "at+jwt")
        except (ValueError, TypeError, OverflowError):
            return  # not encodable as a JWT at all
        with contextlib.suppress(InactiveToken):
            validate(broker, token)

    run()


# --- redirect URIs -------------------------------------------------------------------------------

REGISTERED = ("http://127.0.0.1/callback", "http://localhost/callback", "https://app.example/cb")

uri_parts = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda scheme, host, port, path, query: f"{scheme}://{host}{port}{path}{query}",
        st.sampled_from(["http", "https", "HTTP", "javascript", "", "http:"]),
        st.sampled_from(
            ["127.0.0.1", "localhost", "[::1]", "app.example", "127.0.0.1.evil", "a@127.0.0.1", ""]
        ),
        st.one_of(st.just(""), st.integers(-10, 10**6).map(lambda p: f":{p}"), st.text(max_size=6)),
        st.sampled_from(["/callback", "/cb", "/callback/", "", "/%2e%2e/callback", "/Callback"]),
        st.sampled_from(["", "?x=1", "#frag", "?"]),
    ),
)


@FAST
@given(uri_parts)
def test_redirect_uri_matching_never_raises(candidate: str) -> None:
    allowed = redirect_uri_allowed(candidate, REGISTERED)
    assert isinstance(allowed, bool)
    if allowed and candidate not in REGISTERED:
        # Only the loopback port may differ from a registration.
        assert candidate.startswith(("http://127.0.0.1:", "http://localhost:"))
        assert candidate.endswith("/callback")


@FAST
@given(st.integers(min_value=1, max_value=65535))
def test_loopback_any_port_matches(port: int) -> None:
    assert redirect_uri_allowed(f"http://127.0.0.1:{port}/callback", REGISTERED)
    assert not redirect_uri_allowed(f"https://app.example:{port}/cb", REGISTERED)
