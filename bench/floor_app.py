"""The floor under `token_bench.py`: the least a token service on this stack must do.

A bare ASGI app on the same uvicorn (httptools, uvloop) that reads the form body on the
event loop, then in a worker thread signs one JWT-sized input (RS256 or ES256, with the
same `cryptography` as the broker) and, with `--store`, performs the one durable write a
refresh rotation needs (a `BEGIN IMMEDIATE` transaction marking the parent used and
inserting the successor, in a WAL SQLite file like the broker's), then answers JSON.
No OAuth, no JWT library, no routing or middleware: its requests/s is the ceiling any
refresh grant on this stack can reach on this machine, and `token_bench.py` prints it
beside the broker's figure so the gap is measured rather than guessed.

With `--refresh` (and `--store`) it is instead a whole refresh grant written by hand with
nothing but the standard library and `cryptography`: the refresh token's MAC, header and
claims checked, the token/family/session chain read and judged, the compare-and-swap
rotation, the access token's claims, two compact JWTs (RS256 or ES256, and HS256) and
the JSON answer. It keeps none of the broker's safety nets (no client registry, grace
window, audit, metrics, request id, CORS or body bound), so it shows what the grant's own
work costs on this stack before any library or framework is added.

    python bench/floor_app.py --port 8000 [--alg RS256] [--store /tmp/floor.db] [--refresh]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

Message = dict[str, Any]


def make_signer(alg: str) -> Callable[[bytes], bytes]:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    return signer_for(key)


def signer_for(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Callable[[bytes], bytes]:
    """A JWS signature over `data`: PKCS#1 v1.5 for RS256, raw r || s for ES256."""
    if isinstance(key, rsa.RSAPrivateKey):
        rsa_key = key
        return lambda data: rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    ec_key = key

    def es256(data: bytes) -> bytes:
        r, s = decode_dss_signature(ec_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return es256


class Rotations:
    """The refresh rotation's write, alone: one short transaction per request."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.local = threading.local()
        with self.conn() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS tokens (jti TEXT PRIMARY KEY NOT NULL,"
                " family_id TEXT NOT NULL, used_at INTEGER, successor TEXT,"
                " expires_at INTEGER NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS tokens_family ON tokens (family_id)")
            conn.execute("CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens (expires_at)")
        self.lock = threading.Lock()

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
        """One `BEGIN IMMEDIATE` transaction on this thread's connection, the process's
        writers queued on a lock (as the broker's SQLite store does)."""
        conn = self.conn()
        with self.lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def write(
        conn: sqlite3.Connection, parent: str | None, successor: str, family: str, now_ms: int
    ) -> None:
        """The rotation's durable write: mark `parent` used (when there is one) and
        insert its successor."""
        if parent is not None:
            conn.execute(
                "UPDATE tokens SET used_at = ?, successor = ? WHERE jti = ? AND used_at IS NULL",
                (now_ms, successor, parent),
            )
        conn.execute(
            "INSERT INTO tokens (jti, family_id, expires_at) VALUES (?, ?, ?)",
            (successor, family, now_ms + 86_400_000),
        )

    def rotate(self, parent: str | None) -> str:
        """Mark `parent` used and insert its successor; with no parent (a password
        grant), insert a first token of a new family."""
        successor = secrets.token_urlsafe(16)
        family = parent[:8] if parent else secrets.token_urlsafe(6)
        with self.transaction() as conn:
            self.write(conn, parent, successor, family, int(time.time() * 1000))
        return successor


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def unb64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


SCOPE = "profile email offline_access"
# The columns of HandRefresh's chain read, in its SELECT's order.
CHAIN_COLUMNS = (
    *("used_at", "t_exp"),
    *("family_id", "sid", "client_id", "scope", "f_exp", "f_rev"),
    *("user_id", "login", "email", "name", "auth_time", "s_exp", "s_rev"),
)


class HandRefresh:
    """A refresh grant with rotation, by hand: what every refresh must do, and no more."""

    ISSUER = "http://127.0.0.1"

    def __init__(self, path: str, alg: str, sign: Callable[[bytes], bytes]) -> None:
        self.rotations = Rotations(path)
        self.sign = sign
        self.mac_key = secrets.token_bytes(32)
        self.at_head = b64url(json.dumps({"alg": alg, "typ": "at+jwt", "kid": "k1"}).encode())
        self.rt_head = b64url(json.dumps({"alg": "HS256", "typ": "rt+jwt", "kid": "r1"}).encode())
        with self.rotations.conn() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS sessions (sid TEXT PRIMARY KEY NOT NULL,"
                " user_id INTEGER NOT NULL, login TEXT NOT NULL, email TEXT, name TEXT,"
                " auth_time INTEGER NOT NULL, expires_at INTEGER NOT NULL, revoked_at INTEGER)"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS families (family_id TEXT PRIMARY KEY NOT NULL,"
                " sid TEXT NOT NULL, client_id TEXT NOT NULL, scope TEXT NOT NULL,"
                " expires_at INTEGER NOT NULL, revoked_at INTEGER)"
            )

    def refresh_jwt(self, row: dict[str, Any], jti: str, now: int) -> str:
        claims: dict[str, Any] = {"iss": self.ISSUER, "aud": self.ISSUER, "jti": jti}
        claims |= {"sub": str(row["user_id"]), "sid": row["sid"], "fam": row["family_id"]}
        claims |= {"client_id": row["client_id"], "scope": row["scope"]}
        claims |= {"iat": now, "exp": now + 86_400}
        signing_input = self.rt_head + b"." + b64url(json.dumps(claims).encode())
        mac = hmac.new(self.mac_key, signing_input, hashlib.sha256).digest()
        return (signing_input + b"." + b64url(mac)).decode()

    def access_jwt(self, row: dict[str, Any], now: int) -> str:
        claims = {
            "iss": self.ISSUER,
            "aud": "dna-api",
            "iat": now,
            "exp": now + 600,
            "jti": secrets.token_urlsafe(16),
            "client_id": row["client_id"],
            "scope": row["scope"],
            "sub": str(row["user_id"]),
            "sid": row["sid"],
            "auth_time": row["auth_time"],
            "email": row["email"],
            "name": row["name"],
            "sg_login": row["login"],
            "sg_user_id": row["user_id"],
            "fam": row["family_id"],
        }
        signing_input = self.at_head + b"." + b64url(json.dumps(claims).encode())
        return (signing_input + b"." + b64url(self.sign(signing_input))).decode()

    def login(self, client_id: str) -> dict[str, Any]:
        """A password grant's store work, so each load chain has a family to refresh."""
        now = int(time.time())
        sid, family, jti = (secrets.token_urlsafe(16) for _ in range(3))
        row = {"sid": sid, "user_id": 42, "login": "alice", "email": "a@example.com"}
        row |= {"name": "Alice", "auth_time": now, "client_id": client_id, "scope": SCOPE}
        row["family_id"] = family
        expires_ms = (now + 86_400) * 1000
        with self.rotations.transaction() as conn:
            conn.execute(
                "INSERT INTO sessions VALUES (?, 42, 'alice', 'a@example.com', 'Alice', ?, ?,"
                " NULL)",
                (sid, now, expires_ms),
            )
            conn.execute(
                "INSERT INTO families VALUES (?, ?, ?, ?, ?, NULL)",
                (family, sid, client_id, SCOPE, expires_ms),
            )
            Rotations.write(conn, None, jti, family, now * 1000)
        return self.answer(row, now, jti)

    def answer(self, row: dict[str, Any], now: int, jti: str) -> dict[str, Any]:
        return {
            "access_token": self.access_jwt(row, now),
            "token_type": "Bearer",
            "expires_in": 600,
            "scope": row["scope"],
            "refresh_token": self.refresh_jwt(row, jti, now),
        }

    def claims_of(self, token: str) -> dict[str, Any] | None:
        """The refresh token's claims if its MAC, header and claims are ours, else None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        signing_input = f"{parts[0]}.{parts[1]}".encode()
        mac = hmac.new(self.mac_key, signing_input, hashlib.sha256).digest()
        if not hmac.compare_digest(b64url(mac), parts[2].encode()):
            return None
        header = json.loads(unb64url(parts[0]))
        claims: dict[str, Any] = json.loads(unb64url(parts[1]))
        if header.get("typ") != "rt+jwt" or header.get("alg") != "HS256":
            return None
        if claims.get("iss") != self.ISSUER or claims.get("aud") != self.ISSUER:
            return None
        return claims

    def _consume(
        self, conn: sqlite3.Connection, jti: str, client_id: str, t: int, successor: str
    ) -> dict[str, Any] | None:
        """Read and judge the chain, then mark the token used and insert its successor
        (inside the caller's transaction); None when the token may not be used."""
        found = conn.execute(
            "SELECT t.used_at, t.expires_at, f.*, s.user_id, s.login, s.email, s.name,"
            " s.auth_time, s.expires_at, s.revoked_at FROM tokens t"
            " JOIN families f ON f.family_id = t.family_id JOIN sessions s ON s.sid = f.sid"
            " WHERE t.jti = ?",
            (jti,),
        ).fetchone()
        if found is None:
            return None
        row = dict(zip(CHAIN_COLUMNS, found, strict=True))
        if (
            row["client_id"] != client_id
            or row["used_at"] is not None
            or min(row["t_exp"], row["f_exp"], row["s_exp"]) <= t
            or row["f_rev"] is not None
            or row["s_rev"] is not None
        ):
            return None
        Rotations.write(conn, jti, successor, row["family_id"], t)
        return row

    def refresh(self, client_id: str, token: str) -> tuple[int, dict[str, Any]]:
        claims = self.claims_of(token)
        now = int(time.time())
        if claims is None or claims["exp"] <= now:
            return 400, {"error": "invalid_grant"}
        successor = secrets.token_urlsafe(16)
        t = now * 1000
        with self.rotations.transaction() as conn:
            row = self._consume(conn, claims["jti"], client_id, t, successor)
        if row is None:
            return 400, {"error": "invalid_grant"}
        return 200, self.answer(row, now, successor)


def make_app(
    sign: Callable[[bytes], bytes], rotations: Rotations | None, hand: HandRefresh | None = None
) -> Callable[[Message, Any, Any], Awaitable[None]]:
    executor = ThreadPoolExecutor(max_workers=32)

    def work(body: bytes) -> tuple[int, bytes]:
        form = dict(parse_qsl(body.decode()))
        if hand is not None:
            client_id = form.get("client_id", "")
            if form.get("grant_type") == "password":
                return 200, json.dumps(hand.login(client_id)).encode()
            status, answer = hand.refresh(client_id, form.get("refresh_token", ""))
            return status, json.dumps(answer).encode()
        signature = sign(body)
        refresh = rotations.rotate(form.get("refresh_token")) if rotations else "r"
        answer = {"access_token": signature[:32].hex(), "refresh_token": refresh}
        return 200, json.dumps(answer).encode()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        loop = asyncio.get_running_loop()
        status, out = await loop.run_in_executor(executor, work, b"".join(chunks))
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(out))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--alg", choices=["RS256", "ES256"], default="RS256")
    parser.add_argument("--store", help="SQLite file for the rotation write")
    parser.add_argument(
        "--refresh", action="store_true", help="a whole refresh grant by hand (needs --store)"
    )
    args = parser.parse_args()
    sign = make_signer(args.alg)
    if args.refresh:
        if not args.store:
            parser.error("--refresh needs --store")
        app = make_app(sign, None, HandRefresh(args.store, args.alg, sign))
    else:
        app = make_app(sign, Rotations(args.store) if args.store else None)
    sock = socket.create_server(("127.0.0.1", args.port))  # listening before "ready"
    print("floor app ready", flush=True)
    config = uvicorn.Config(app, log_level="warning", http="httptools", loop="uvloop")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
