"""A fake broker for the client's tests: keys, token minting, JWKS over MockTransport."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://broker.test"
AUDIENCE = "dna-api"
NOW = 1_750_000_000.0


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
    """Holds signing keys, mints tokens and answers discovery + JWKS requests."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.keys: dict[str, Any] = {}
        self.active = ""
        self.cache_control: str | None = "max-age=300"
        self.down = False
        self.delay = 0.0
        self.requests: list[str] = []
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
            "iss": ISSUER,
            "sub": "101",
            "aud": AUDIENCE,
            "exp": now + 600,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "client_id": "dna-cli",
            "scope": "openid profile email",
            "sid": "session-1",
            "auth_time": now,
            "email": "alice@example.com",
            "name": "Alice Artist",
            "sg_login": "alice",
            "sg_user_id": 101,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not DROP}

    def mint(
        self, *, kid: str | None = None, typ: str = "at+jwt", headers: Any = None, **claims: Any
    ) -> str:
        kid = kid or self.active
        key = self.keys[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        header = {"kid": kid, "typ": typ, **(headers or {})}
        return jwt.encode(self.claims(**claims), key, algorithm=alg, headers=header)

    def public_pem(self, kid: str) -> bytes:
        return bytes(
            self.keys[kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(kid, key) for kid, key in self.keys.items()]}

    # HTTP

    def count(self, path: str) -> int:
        return self.requests.count(path)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request.url.path)
        if self.down:
            raise httpx.ConnectError("broker down", request=request)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks.json"})
        if request.url.path == "/jwks.json":
            headers = {"cache-control": self.cache_control} if self.cache_control else {}
            return httpx.Response(200, json=self.jwks(), headers=headers)
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


DROP: Any = object()
"""Pass as a claim value to leave the claim out."""


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return signing_input + "." + b64(signature)


def forge_hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(mac)
