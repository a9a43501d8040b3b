"""The floor under the peer bench (`../shared/peer-bench/run.sh`): the least any token
service on this stack does for the bench's three modes, to set beside node-oidc-provider.

A bare ASGI app on the same uvicorn (httptools, uvloop) that answers exactly what the
bench's load generator asks, with nothing but `cryptography`, keeping refresh tokens in a
dict (no durability, no store). The token work runs on a pool of 32 threads, one hop
per request as in the broker: a service with a store must not stall its event loop on
it, and on a core shared with other processes the scheduler shares time by runnable
thread, so a floor without the pool would be measured on a smaller share than the broker:

- `POST /token` `grant_type=password`: a refresh token, an access token and an ID token;
- `grant_type=refresh_token`: the token swapped in the dict, then two RS256 signatures
  (access token, ID token), as the broker and the peer sign on every refresh;
- `grant_type=client_credentials` with HTTP Basic: one RS256 signature;
- `GET /jwks.json` and discovery: prepared bytes.

No OAuth library, routing, middleware, logging, metrics, audit or validation beyond
what the answer needs. Its ratio to the peer, measured in the same run, is the most any
Python service on uvicorn and `cryptography` can reach on the machine: a target above it
is out of reach whatever the broker does (`bench/peer_floor.sh` runs it beside the peer).

    python bench/peer_floor.py --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import json
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

Message = dict[str, Any]


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class Floor:
    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_urlsafe(8)
        numbers = self.key.public_key().public_numbers()
        jwk = {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": b64url(numbers.n.to_bytes(256, "big")).decode(),
            "e": b64url(numbers.e.to_bytes(3, "big")).decode(),
        }
        self.jwks = json.dumps({"keys": [jwk]}).encode()
        self.discovery = json.dumps(
            {
                "issuer": issuer,
                "token_endpoint": f"{issuer}/token",
                "jwks_uri": f"{issuer}/jwks.json",
            }
        ).encode()
        self.header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": self.kid}).encode())
        self.basic = "Basic " + base64.b64encode(b"dna-backend:dna-backend-secret").decode()
        self.refresh_tokens: dict[str, str] = {}
        self.lock = threading.Lock()

    def jwt(self, claims: dict[str, Any]) -> str:
        signing_input = self.header + b"." + b64url(json.dumps(claims).encode())
        signature = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return (signing_input + b"." + b64url(signature)).decode()

    def claims(self, sub: str, aud: str) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.issuer,
            "sub": sub,
            "aud": aud,
            "iat": now,
            "exp": now + 600,
            "jti": secrets.token_urlsafe(16),
        }

    def user_tokens(self, sub: str) -> dict[str, Any]:
        refresh = secrets.token_urlsafe(32)
        with self.lock:
            self.refresh_tokens[refresh] = sub
        return {
            "access_token": self.jwt(self.claims(sub, "dna-api")),
            "id_token": self.jwt(self.claims(sub, "dna-cli")),
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": 600,
        }

    def token(self, form: dict[str, str], authorization: str) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type")
        if grant == "password" and form.get("password") == "alice-pw":
            return 200, self.user_tokens("101")
        if grant == "refresh_token":
            with self.lock:
                sub = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
            if sub is not None:
                return 200, self.user_tokens(sub)
        if grant == "client_credentials" and hmac.compare_digest(authorization, self.basic):
            answer = {
                "access_token": self.jwt(self.claims("dna-backend", "dna-api")),
                "token_type": "Bearer",
                "expires_in": 600,
            }
            return 200, answer
        return 400, {"error": "invalid_grant"}


def make_app(floor: Floor) -> Callable[[Message, Any, Any], Awaitable[None]]:
    documents = {"/jwks.json": floor.jwks, "/.well-known/openid-configuration": floor.discovery}
    executor = ThreadPoolExecutor(max_workers=32)

    async def app(scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path in documents:
            status, out = 200, documents[path]
        else:
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            form = dict(parse_qsl(b"".join(chunks).decode()))
            authorization = next(
                (v.decode() for k, v in scope["headers"] if k == b"authorization"), ""
            )
            loop = asyncio.get_running_loop()
            status, answer = await loop.run_in_executor(executor, floor.token, form, authorization)
            out = json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(out))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = make_app(Floor(f"http://127.0.0.1:{args.port}"))
    sock = socket.create_server(("127.0.0.1", args.port))
    config = uvicorn.Config(app, log_level="warning", http="httptools", loop="uvloop")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
