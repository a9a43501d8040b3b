"""A fake broker for the client's tests: keys, token minting, discovery, the JWKS and the
revocation feed (REVOCATION_FORMATS.md), logout tokens.

One request handler (`_answer`) serves both transports: an httpx `MockTransport` for
unit tests of the caches (`client()`), and a real uvicorn server (`served()`) for the
tests of the background thread, the integrations and anything timing-related. The feed
is served exactly as the format page says: JSON by default, a signed JWT
(`typ: revocations+jwt`, `exp` = `iat` + 60) for `Accept: application/jwt`, `since`
cursors (a malformed or too old one gives `full: true`), an overlap window, ETag and 304,
`Cache-Control: public, max-age=1`, 503 with `Retry-After` when the store is "down".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://broker.test"
AUDIENCE = "dna-api"
NOW = 1_750_000_000.0
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
FEED_OVERLAP_MS = 1000  # entries re-sent after a cursor, as the broker's overlap window
FEED_MAX_SINCE_AGE_MS = 3600 * 1000  # an older cursor gets the full set


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_KEY_CACHE: dict[str, Any] = {}


def private_key(name: str, kind: str = "RSA") -> Any:
    """Keys are cached per name: RSA generation is slow and tests need only a few."""
    if name not in _KEY_CACHE:
        _KEY_CACHE[name] = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "RSA"
            else ec.generate_private_key(ec.SECP256R1())
        )
    return _KEY_CACHE[name]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(kid: str, key: Any) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        jwk["alg"] = "RS256"
    else:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        jwk["alg"] = "ES256"
    jwk.update(kid=kid, use="sig")
    return jwk


class FakeBroker:
    """Holds signing keys, mints tokens and answers discovery, JWKS and the feed."""

    def __init__(self, clock: FakeClock | None = None, issuer: str = ISSUER) -> None:
        self.clock = clock or FakeClock()
        self.issuer = issuer
        self.keys: dict[str, Any] = {}
        self.active = ""
        self.cache_control: str | None = "max-age=300"
        self.down = False  # every endpoint: MockTransport refuses, HTTP answers 503
        self.feed_down = False  # the feed alone answers 503 (its store is down)
        self.advertise_feed = True
        self.hang = False  # served: requests are held until this is cleared
        self.delay = 0.0
        self.requests: list[str] = []
        self.feed_reads: list[tuple[str | None, str, int]] = []  # (since, accept, status)
        self.entries: list[tuple[int, dict[str, Any]]] = []  # (created ms, entry)
        self.feed_signer: tuple[str, Any] | None = None  # (kid, key): sign the feed with it
        self._lock = threading.Lock()
        self.add_key("k1")

    # keys and tokens

    def add_key(self, kid: str, kind: str = "RSA", *, activate: bool = True) -> str:
        self.keys[kid] = private_key(kid, kind)
        if activate:
            self.active = kid
        return kid

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "101",
            "aud": AUDIENCE,
            "exp": now + 600,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "client_id": "dna-cli",
            "scope": "openid profile email",
            "sid": "session-1",
            "fam": "family-1",
            "auth_time": now,
            "email": "alice@example.com",
            "name": "Alice Artist",
            "sg_login": "alice",
            "sg_user_id": 101,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not DROP}

    def sign(self, payload: dict[str, Any], typ: str, kid: str | None = None) -> str:
        kid = kid or self.active
        key = self.keys[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid, "typ": typ})

    def mint(
        self, *, kid: str | None = None, typ: str = "at+jwt", headers: Any = None, **claims: Any
    ) -> str:
        kid = kid or self.active
        key = self.keys[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        header = {"kid": kid, "typ": typ, **(headers or {})}
        return jwt.encode(self.claims(**claims), key, algorithm=alg, headers=header)

    def logout_token(
        self, *, typ: str = "logout+jwt", kid: str | None = None, **overrides: Any
    ) -> str:
        """An OIDC back-channel logout token (REVOCATION_FORMATS.md) for dna-backend."""
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": "dna-backend",
            "iat": now,
            "exp": now + 120,
            "jti": uuid.uuid4().hex,
            "sid": "session-1",
            "sub": "101",
            "events": {LOGOUT_EVENT: {}},
        }
        claims.update(overrides)
        return self.sign({k: v for k, v in claims.items() if v is not DROP}, typ, kid)

    def public_pem(self, kid: str) -> bytes:
        return bytes(
            self.keys[kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def jwks(self) -> dict[str, Any]:
        # A copy first: tests add keys while the validator's thread asks for the JWKS.
        return {"keys": [public_jwk(kid, key) for kid, key in list(self.keys.items())]}

    # the revocation feed

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def revoke(self, kind: str, value: str, exp: float | None = None) -> dict[str, Any]:
        """A new feed entry (kind sid, fam or jti), live until `exp` (default now + 600)."""
        entry = {kind: value, "exp": int(exp if exp is not None else self.clock() + 600)}
        with self._lock:
            self.entries.append((self.now_ms(), entry))
        return entry

    def feed_object(self, since: str | None) -> dict[str, Any]:
        now_ms = self.now_ms()
        live = [(at, e) for at, e in self.entries if e["exp"] > self.clock()]
        cursor: int | None = None
        if since is not None and since.isdigit():
            cursor = int(since)
        full = cursor is None or cursor < now_ms - FEED_MAX_SINCE_AGE_MS
        if full:
            entries = [e for _, e in live]
        else:
            assert cursor is not None
            entries = [e for at, e in live if at >= cursor - FEED_OVERLAP_MS]
        return {
            "iss": self.issuer,
            "iat": int(self.clock()),
            "cursor": str(now_ms),
            "full": full,
            "entries": entries,
        }

    def _feed(self, request: httpx.Request) -> httpx.Response:
        since_values = parse_qs(request.url.query.decode()).get("since")
        since = since_values[0] if since_values else None
        accept = request.headers.get("accept", "*/*")
        if self.feed_down:
            self.feed_reads.append((since, accept, 503))
            return httpx.Response(
                503,
                json={"error": "temporarily_unavailable", "error_description": "store down"},
                headers={"retry-after": "5"},
            )
        obj = self.feed_object(since)
        if "application/jwt" in accept:
            claims = {**obj, "exp": obj["iat"] + 60}
            if self.feed_signer is None:
                body = self.sign(claims, "revocations+jwt").encode()
            else:  # a forger's key, absent from the JWKS
                kid, key = self.feed_signer
                headers = {"kid": kid, "typ": "revocations+jwt"}
                body = jwt.encode(claims, key, algorithm="RS256", headers=headers).encode()
            kind = "application/jwt"
        else:
            body = json.dumps(obj).encode()
            kind = "application/json"
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {"etag": etag, "cache-control": "public, max-age=1"}
        if request.headers.get("if-none-match") == etag:
            self.feed_reads.append((since, accept, 304))
            return httpx.Response(304, headers=headers)
        self.feed_reads.append((since, accept, 200))
        return httpx.Response(200, content=body, headers={**headers, "content-type": kind})

    # HTTP

    def count(self, path: str) -> int:
        return self.requests.count(path)

    def metadata(self) -> dict[str, Any]:
        metadata = {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks.json"}
        if self.advertise_feed:
            metadata["revocation_feed_endpoint"] = f"{self.issuer}/revocations"
        return metadata

    def _answer(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request.url.path)
        if self.down:
            raise httpx.ConnectError("broker down", request=request)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=self.metadata())
        if request.url.path == "/jwks.json":
            headers = {"cache-control": self.cache_control} if self.cache_control else {}
            return httpx.Response(200, json=self.jwks(), headers=headers)
        if request.url.path == "/revocations":
            return self._feed(request)
        return httpx.Response(404)

    def _sync_handler(self, request: httpx.Request) -> httpx.Response:
        if self.delay:
            time.sleep(self.delay)
        return self._answer(request)

    async def _async_handler(self, request: httpx.Request) -> httpx.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        return self._answer(request)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self._sync_handler))

    def async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self._async_handler))

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        """The same answers as an ASGI app, for `served()`."""
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while self.hang:  # the injected fault itself: a broker that never answers
            await asyncio.sleep(0.01)
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"]]
        url = f"{self.issuer}{scope['path']}"
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode()
        request = httpx.Request(scope["method"], url, headers=headers)
        try:
            response = self._answer(request)
        except httpx.ConnectError:
            response = httpx.Response(503, json={"error": "temporarily_unavailable"})
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(k.encode(), v.encode()) for k, v in response.headers.multi_items()],
            }
        )
        await send({"type": "http.response.body", "body": response.content})

    @contextlib.contextmanager
    def served(self) -> Iterator[str]:
        """Serve over real HTTP on 127.0.0.1; the issuer becomes the server's URL."""
        from client_servers import free_port, serve

        port = free_port()
        self.issuer = f"http://127.0.0.1:{port}"

        async def app(scope: Any, receive: Any, send: Any) -> None:
            # A plain coroutine function: uvicorn takes a bound method for ASGI 2.
            await self.app(scope, receive, send)

        with serve(app, port=port) as server:
            try:
                yield server.url
            finally:
                self.hang = False  # release held requests so the server can stop


DROP: Any = object()
"""Pass as a claim value to leave the claim out."""


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return signing_input + "." + b64(signature)


def forge_hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(mac)


class LogRecords(logging.Handler):
    """Records of one logger, without pytest's caplog (the suite may run -p no:logging)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.logger = logging.getLogger(name)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.WARNING) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def __enter__(self) -> LogRecords:
        self._level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)
