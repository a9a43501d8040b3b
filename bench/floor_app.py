"""The floor under `token_bench.py`: the least a token service on this stack must do.

A bare ASGI app on the same uvicorn (httptools, uvloop) that reads the form body on the
event loop, then in a worker thread signs one JWT-sized input (RS256 or ES256, with the
same `cryptography` as the broker) and, with `--store`, performs the one durable write a
refresh rotation needs (a `BEGIN IMMEDIATE` transaction marking the parent used and
inserting the successor, in a WAL SQLite file like the broker's), then answers JSON.
No OAuth, no JWT library, no routing or middleware: its requests/s is the ceiling any
refresh grant on this stack can reach on this machine, and `token_bench.py` prints it
beside the broker's figure so the gap is measured rather than guessed.

    python bench/floor_app.py --port 8000 [--alg RS256] [--store /tmp/floor.db]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

Message = dict[str, Any]


def make_signer(alg: str) -> Callable[[bytes], bytes]:
    if alg == "RS256":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return lambda data: rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    ec_key = ec.generate_private_key(ec.SECP256R1())
    return lambda data: ec_key.sign(data, ec.ECDSA(hashes.SHA256()))


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

    def rotate(self, parent: str | None) -> str:
        """Mark `parent` used and insert its successor; with no parent (a password
        grant), insert a first token of a new family."""
        successor = secrets.token_urlsafe(16)
        family = parent[:8] if parent else secrets.token_urlsafe(6)
        now = int(time.time() * 1000)
        conn = self.conn()
        with self.lock:
            conn.execute("BEGIN IMMEDIATE")
            if parent is not None:
                conn.execute(
                    "UPDATE tokens SET used_at = ?, successor = ? WHERE jti = ?"
                    " AND used_at IS NULL",
                    (now, successor, parent),
                )
            conn.execute(
                "INSERT INTO tokens (jti, family_id, expires_at) VALUES (?, ?, ?)",
                (successor, family, now + 86_400_000),
            )
            conn.execute("COMMIT")
        return successor


def make_app(
    sign: Callable[[bytes], bytes], rotations: Rotations | None
) -> Callable[[Message, Any, Any], Awaitable[None]]:
    executor = ThreadPoolExecutor(max_workers=32)

    def work(body: bytes) -> bytes:
        form = dict(parse_qsl(body.decode()))
        signature = sign(body)
        refresh = rotations.rotate(form.get("refresh_token")) if rotations else "r"
        answer = {"access_token": signature[:32].hex(), "refresh_token": refresh}
        return json.dumps(answer).encode()

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
        out = await loop.run_in_executor(executor, work, b"".join(chunks))
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(out))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--alg", choices=["RS256", "ES256"], default="RS256")
    parser.add_argument("--store", help="SQLite file for the rotation write")
    args = parser.parse_args()
    app = make_app(make_signer(args.alg), Rotations(args.store) if args.store else None)
    sock = socket.create_server(("127.0.0.1", args.port))  # listening before "ready"
    print("floor app ready", flush=True)
    config = uvicorn.Config(app, log_level="warning", http="httptools", loop="uvloop")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
