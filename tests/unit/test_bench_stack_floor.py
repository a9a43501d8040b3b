"""`bench/peer_stack_floor.py` is the floor the issue's speed targets are judged against: it
must do the whole job the peer bench asks (rotation, reuse refused, client
authentication, durable tokens, its log lines), or its figure would flatter the floor."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import jwt
import pytest

from tests.support.bench import load_bench
from tests.support.servers import ServerThread, reserve_port

LOGIN = {
    "grant_type": "password",
    "username": "alice",
    "password": "alice-pw",
    "client_id": "dna-cli",
    "scope": "openid offline_access",
}


@pytest.fixture(scope="module")
def stack_floor() -> ModuleType:
    return load_bench("peer_stack_floor")


@pytest.fixture
def lines(stack_floor: ModuleType, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "lines.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("floor")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_durable_stack_floor_does_the_whole_job(
    stack_floor: ModuleType, tmp_path: Path, lines: Path
) -> None:
    port = reserve_port()
    issuer = f"http://127.0.0.1:{port}"
    db = tmp_path / "floor.db"
    app = stack_floor.build(issuer, stack_floor.SQLiteTokens(str(db)))
    server = ServerThread(app, port).start()
    try:
        with httpx.Client(base_url=issuer) as http:
            metadata = http.get("/.well-known/openid-configuration").json()
            assert metadata["token_endpoint"] == f"{issuer}/token"
            jwks = jwt.PyJWKSet.from_dict(http.get("/jwks.json").json())

            first = http.post("/token", data=LOGIN).json()
            second = http.post(
                "/token",
                data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
                | {"client_id": "dna-cli"},
            )
            assert second.status_code == 200, second.text
            tokens = second.json()
            key = jwks.keys[0].key
            assert jwt.decode(tokens["access_token"], key, ["RS256"], audience="dna-api")
            id_claims = jwt.decode(tokens["id_token"], key, ["RS256"], audience="dna-cli")
            assert id_claims["sub"] == "101"

            # The used parent is refused; the live successor still works.
            reuse = http.post(
                "/token",
                data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
                | {"client_id": "dna-cli"},
            )
            assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"

            basic = ("dna-backend", "dna-backend-secret")
            cc = {"grant_type": "client_credentials", "scope": ""}
            assert http.post("/token", data=cc, auth=basic).status_code == 200
            wrong = http.post("/token", data=cc, auth=("dna-backend", "guess"))
            assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    finally:
        server.stop()

    # Durable: both refresh tokens on disk, by hash only, the parent marked used.
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT hash, used_at FROM refresh").fetchall()
    assert len(rows) == 2 and sum(used is not None for _, used in rows) == 1
    assert first["refresh_token"] not in db.read_bytes().decode("latin-1")
    # One access line per request that reached /token, an audit line per token answer.
    logged = [json.loads(line) for line in lines.read_text().splitlines()]
    events = [line["event"] for line in logged]
    assert events.count("http_request") == 5
    assert events.count("password") == events.count("refresh_token") == 1
    assert events.count("client_credentials") == 1
