"""The floor of the stack the broker is built on, under the peer bench: what Starlette and
an Authlib `AuthorizationServer` cost before any of the broker's own work.

`bench/peer_floor.py` is the least any Python service on uvicorn does for the peer bench's
three modes. This one answers the same requests through the two libraries the project's
issues fix as founding choices (the token endpoint is an Authlib `AuthorizationServer`,
which keeps dispatching, client authentication and request parsing; the HTTP layer is
Starlette), with nothing of the broker's own on top:

- Starlette routes: discovery and the JWKS as prepared bytes, `POST /token`;
- Authlib's own `ClientCredentialsGrant`, `ResourceOwnerPasswordCredentialsGrant` and
  `RefreshTokenGrant`, with `client_secret_basic` for `dna-backend` and public `dna-cli`;
- the token work on a 32-thread pool (one hop per request, as in the broker);
- access tokens and ID tokens as RS256 JWTs signed with `cryptography` (two signatures
  per refresh, one per client_credentials), refresh tokens in a dict.

No store, no durability, no logging, audit, metrics, request id, CORS, body bound,
throttling or any check Authlib does not make itself. Its ratio to node-oidc-provider,
measured in the same run (`bench/peer_rounds.sh`), is the most the broker could reach on
these libraries on this machine if all of its own work were free.

Two options add back the two costs of the broker's that no operator may turn off:
`--durable FILE` keeps refresh tokens in a WAL SQLite file (hashed; the successor
inserted and the parent marked used with a compare-and-swap, each in a `BEGIN IMMEDIATE`
transaction behind a process lock, as Authlib's refresh grant calls `save_token` and
`revoke_old_credential` one after the other), and `--log FILE` writes one JSON access
line per request and one JSON audit line per token answer through the standard
`logging` module.

    python bench/peer_stack_floor.py --port 8000 [--durable /tmp/floor.db] [--log /tmp/floor.log]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON = "application/json"


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class Signer:
    def __init__(self) -> None:
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
        self.header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": self.kid}).encode())

    def jwt(self, claims: dict[str, Any]) -> str:
        signing_input = self.header + b"." + b64url(json.dumps(claims).encode())
        signature = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return (signing_input + b"." + b64url(signature)).decode()


class Client(ClientMixin):  # type: ignore[misc]
    def __init__(self, client_id: str, secret: str | None, grant_types: set[str]) -> None:
        self.client_id = client_id
        self.secret = secret
        self.grant_types = grant_types

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret is not None and hmac.compare_digest(self.secret, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == ("none" if self.secret is None else "client_secret_basic")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


CLIENTS = {
    "dna-cli": Client("dna-cli", None, {"password", "refresh_token"}),
    "dna-backend": Client("dna-backend", "dna-backend-secret", {"client_credentials"}),
}


class MemoryTokens:
    """Refresh tokens in a dict: nothing survives a restart."""

    def __init__(self) -> None:
        self.held: dict[str, Credential] = {}
        self.lock = threading.Lock()

    def put(self, credential: Credential) -> None:
        with self.lock:
            self.held[credential.token] = credential

    def get(self, token: str) -> Credential | None:
        with self.lock:
            return self.held.get(token)

    def consume(self, credential: Credential) -> None:
        with self.lock:
            self.held.pop(credential.token, None)


class SQLiteTokens:
    """Refresh tokens in a WAL SQLite file, stored by hash; one connection per thread and
    writers queued on a process lock (SQLite's busy handler polls with sleeps)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.local = threading.local()
        self.write_lock = threading.Lock()
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS refresh (hash TEXT PRIMARY KEY, user TEXT NOT NULL,"
                " client_id TEXT NOT NULL, scope TEXT NOT NULL, exp INTEGER NOT NULL,"
                " used_at INTEGER)"
            )

    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self.local.conn = conn
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn()
        with self.write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def put(self, credential: Credential) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO refresh VALUES (?, ?, ?, ?, ?, NULL)",
                (
                    self.digest(credential.token),
                    credential.user,
                    credential.client_id,
                    credential.scope,
                    int(time.time()) + 86400,
                ),
            )

    def get(self, token: str) -> Credential | None:
        row = (
            self.conn()
            .execute(
                "SELECT user, client_id, scope FROM refresh"
                " WHERE hash = ? AND used_at IS NULL AND exp > ?",
                (self.digest(token), int(time.time())),
            )
            .fetchone()
        )
        return None if row is None else Credential(token, *row)

    def consume(self, credential: Credential) -> None:
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE refresh SET used_at = ? WHERE hash = ? AND used_at IS NULL",
                (int(time.time()), self.digest(credential.token)),
            )
            if cursor.rowcount != 1:
                raise RuntimeError("the refresh token was used meanwhile")


audit_log = logging.getLogger("floor.audit")
access_log = logging.getLogger("floor.access")


def log_line(logger: logging.Logger, event: str, **fields: Any) -> None:
    if logger.isEnabledFor(logging.INFO):
        logger.info(json.dumps({"event": event, "timestamp": time.time(), **fields}))


class Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, issuer: str, signer: Signer, store: MemoryTokens | SQLiteTokens) -> None:
        super().__init__()
        self.issuer = issuer
        self.signer = signer
        self.store = store
        self.register_token_generator("default", self.tokens)
        self.register_grant(ClientCredentials)
        self.register_grant(Password)
        self.register_grant(Refresh)

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

    def tokens(
        self,
        grant_type: str,
        client: Client,
        user: str | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        token: dict[str, Any] = {
            "access_token": self.signer.jwt(self.claims(user or client.client_id, "dna-api")),
            "token_type": "Bearer",
            "expires_in": 600,
        }
        if user is not None and scope and "openid" in scope.split():
            token["id_token"] = self.signer.jwt(self.claims(user, client.client_id))
        if include_refresh_token and user is not None:
            token["refresh_token"] = secrets.token_urlsafe(32)
        if scope:
            token["scope"] = scope
        return token

    def query_client(self, client_id: str) -> Client | None:
        return CLIENTS.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        client_id = request.client.client_id
        if "refresh_token" in token:
            refresh = token["refresh_token"]
            self.store.put(Credential(refresh, request.user, client_id, token.get("scope", "")))
        log_line(audit_log, request.payload.grant_type, client_id=client_id, user=request.user)

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


class ClientCredentials(grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic"]


class Password(grants.ResourceOwnerPasswordCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

    def authenticate_user(self, username: str, password: str) -> str | None:
        return "101" if (username, password) == ("alice", "alice-pw") else None


class Refresh(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Credential | None:
        server: Server = self.server
        return server.store.get(refresh_token)

    def authenticate_user(self, credential: Credential) -> str:
        return credential.user

    def revoke_old_credential(self, credential: Credential) -> None:
        server: Server = self.server
        server.store.consume(credential)


class FormRequest(OAuth2Request):  # type: ignore[misc]
    """Authlib's request with the form it reads (the framework glue it ships only for
    Flask and Django)."""

    def __init__(self, uri: str, headers: Any, form: dict[str, str]) -> None:
        super().__init__("POST", uri, headers=headers)
        self.payload = BasicOAuth2Payload(form)
        self._form = form

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return {}


class Credential(TokenMixin):  # type: ignore[misc]
    """A refresh token's record, answering what Authlib's refresh grant asks of it."""

    def __init__(self, token: str, user: str, client_id: str, scope: str) -> None:
        self.token, self.user, self.client_id, self.scope = token, user, client_id, scope

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return 600

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return False


def build(issuer: str, store: MemoryTokens | SQLiteTokens) -> Starlette:
    signer = Signer()
    server = Server(issuer, signer, store)
    executor = ThreadPoolExecutor(max_workers=32)
    discovery = json.dumps(
        {"issuer": issuer, "token_endpoint": f"{issuer}/token", "jwks_uri": f"{issuer}/jwks.json"}
    ).encode()

    async def jwks(request: Request) -> Response:
        return Response(signer.jwks, media_type=JSON)

    async def metadata(request: Request) -> Response:
        return Response(discovery, media_type=JSON)

    async def token(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        oreq = FormRequest(f"{issuer}/token", request.headers, form)
        loop = asyncio.get_running_loop()
        status, body, headers = await loop.run_in_executor(
            executor, server.create_token_response, oreq
        )
        log_line(access_log, "http_request", method="POST", endpoint="/token", status=status)
        return Response(json.dumps(body), status_code=status, headers=dict(headers))

    return Starlette(
        routes=[
            Route("/jwks.json", jwks),
            Route("/.well-known/openid-configuration", metadata),
            Route("/token", token, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--durable", metavar="FILE", help="refresh tokens in this SQLite file")
    parser.add_argument("--log", metavar="FILE", help="access and audit lines to this file")
    args = parser.parse_args()
    if args.log:
        handler = logging.FileHandler(args.log)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger("floor").addHandler(handler)
        logging.getLogger("floor").setLevel(logging.INFO)
    store = SQLiteTokens(args.durable) if args.durable else MemoryTokens()
    app = build(f"http://127.0.0.1:{args.port}", store)
    sock = socket.create_server(("127.0.0.1", args.port))
    config = uvicorn.Config(app, log_level="warning", http="httptools", loop="uvloop")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
