"""The sudo connection pool (with a fake factory, and with shotgun_api3 against the
ShotGrid emulator under uvicorn) and the RFC 8693 exchange helper (against a small real
Starlette app under uvicorn)."""

from __future__ import annotations

import asyncio
import base64
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

import pytest
from shotgrid_emulator import ShotGridEmulator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from broker_client import InvalidClaim
from broker_client.shotgrid import (
    READ_METHODS,
    SHOTGRID_TOKEN_TYPE,
    WRITE_METHODS,
    SudoConnectionPool,
    TokenExchangeError,
    aexchange_for_shotgrid_token,
    exchange_for_shotgrid_token,
)
from client_servers import serve


class FakeConnection:
    def __init__(self, login: str) -> None:
        self.login = login
        self.in_use = threading.Lock()
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeFactory:
    def __init__(self) -> None:
        self.made: list[FakeConnection] = []
        self._lock = threading.Lock()

    def __call__(self, login: str) -> FakeConnection:
        conn = FakeConnection(login)
        with self._lock:
            self.made.append(conn)
        return conn


def pool(factory: FakeFactory, max_idle: int = 4) -> SudoConnectionPool:
    return SudoConnectionPool(
        "https://sg.test", "token-broker", "key", max_idle=max_idle, factory=factory
    )


def test_connections_act_as_the_token_user_and_are_reused(validator: Any, broker: Any) -> None:
    factory = FakeFactory()
    sudo = pool(factory)
    claims = validator.validate(broker.mint())
    with sudo.connection(claims) as sg:
        assert sg.login == "alice"
    with sudo.connection(claims) as again:
        assert again.connection is sg.connection
    with sudo.connection("bob") as other:
        assert other.login == "bob"
    assert [c.login for c in factory.made] == ["alice", "bob"]


def test_a_token_without_sg_login_is_refused(validator: Any, broker: Any) -> None:
    from client_support import DROP

    claims = validator.validate(broker.mint(sg_login=DROP))
    with pytest.raises(InvalidClaim), pool(FakeFactory()).connection(claims):
        pass


def test_idle_connections_are_an_lru_and_evicted_ones_closed() -> None:
    factory = FakeFactory()
    sudo = pool(factory, max_idle=2)
    for login in ("a", "b", "a", "c"):  # a is used again, so b is the least recent
        with sudo.connection(login):
            pass
    assert sudo.idle_logins() == ["a", "c"]
    closed = [c.login for c in factory.made if c.closed]
    assert closed == ["b"]
    sudo.close()
    assert all(c.closed for c in factory.made)


def test_a_connection_is_never_shared_between_threads() -> None:
    factory = FakeFactory()
    sudo = pool(factory, max_idle=8)
    logins = [f"user{i % 5}" for i in range(1000)]
    overlaps = []

    def use(login: str) -> None:
        with sudo.connection(login) as conn:
            assert conn.login == login
            if not conn.in_use.acquire(blocking=False):
                overlaps.append(login)
                return
            try:
                for _ in range(100):
                    pass
            finally:
                conn.in_use.release()

    with ThreadPoolExecutor(16) as executor:
        list(executor.map(use, logins))
    assert overlaps == []
    assert sudo.created == len(factory.made) <= 1000
    assert len(sudo.idle_logins()) <= 8


def test_the_default_factory_makes_a_sudo_shotgun_connection() -> None:
    sudo = SudoConnectionPool("https://sg.test", "token-broker", "token-broker-key", connect=False)
    with sudo.connection("alice") as sg:
        assert type(sg.connection).__name__ == "Shotgun"
        assert sg.config.sudo_as_login == "alice"
        assert sg.config.script_name == "token-broker"
        # shotgun_api3's own retries (TLS errors, writes included) are off: ours only.
        assert sg.config.max_rpc_attempts == 1


# --- against the ShotGrid emulator: reconnecting after the server closed an idle socket ---

ALICE = ["Spring Shorts", "Harbor Lights"]


@pytest.fixture
def short_keep_alive() -> Iterator[tuple[ShotGridEmulator, str]]:
    """The emulator closing idle connections after 1 s (uvicorn's timeout_keep_alive; a
    real site's proxies do the same after a while), so a pooled connection goes stale."""
    emulator = ShotGridEmulator.default()
    with serve(emulator.app, timeout_keep_alive=1) as site:
        yield emulator, site.url


@pytest.fixture
def sudo(short_keep_alive: tuple[ShotGridEmulator, str]) -> Iterator[SudoConnectionPool]:
    pool = SudoConnectionPool(short_keep_alive[1], "token-broker", "token-broker-key")
    yield pool
    pool.close()


def wait_until_the_server_closed(sg: Any, timeout: float = 10.0) -> None:
    """Poll the connection's socket until the server's FIN arrives (readable, EOF)."""
    http = sg.connection._connection  # shotgun_api3's httplib2.Http
    (conn,) = http.connections.values()
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([conn.sock], [], [], remaining)
        if readable and conn.sock.recv(1, socket.MSG_PEEK) == b"":
            return
    raise AssertionError("the server did not close the idle connection")


def names(projects: list[dict[str, Any]]) -> list[str]:
    return [p["name"] for p in projects]


def test_a_read_reconnects_once_after_the_server_closed_the_idle_connection(
    sudo: SudoConnectionPool, short_keep_alive: tuple[ShotGridEmulator, str]
) -> None:
    emulator, _ = short_keep_alive
    with sudo.connection("alice") as sg:
        assert names(sg.find("Project", [], ["name"], order=[])) == ALICE
    with sudo.connection("alice") as sg:  # the same connection, idle since
        wait_until_the_server_closed(sg)
        assert names(sg.find("Project", [], ["name"], order=[])) == ALICE
        assert sg.reconnects == 1
        wait_until_the_server_closed(sg)
        assert sg.find_one("HumanUser", [["login", "is", "alice"]], ["login"])["id"] == 101
        assert sg.reconnects == 2
    assert sudo.created == 1
    assert emulator.calls["api3:read"] == 3  # the failed tries never reached the server


def test_a_write_is_never_retried(
    sudo: SudoConnectionPool, short_keep_alive: tuple[ShotGridEmulator, str]
) -> None:
    emulator, _ = short_keep_alive
    with sudo.connection("alice") as sg:
        sg.find("Project", [], ["name"])
        wait_until_the_server_closed(sg)
        with pytest.raises(ConnectionError):
            sg.create("Note", {"subject": "hello", "project": {"type": "Project", "id": 201}})
        assert sg.reconnects == 0
        # A retry would have reached the emulator (which answers create with a fault).
        assert emulator.calls["api3:create"] == 0
        assert names(sg.find("Project", [], ["name"], order=[])) == ALICE  # still usable


def test_reads_and_writes_are_told_apart() -> None:
    assert {"find", "find_one", "summarize", "info", "schema_read"} <= READ_METHODS
    assert {"create", "update", "delete", "batch", "upload", "revive"} <= WRITE_METHODS
    assert not READ_METHODS & WRITE_METHODS


# --- token exchange ---------------------------------------------------------------------

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"


async def token_endpoint(request: Request) -> JSONResponse:
    expected = base64.b64encode(b"dna-backend:dna-backend-secret").decode()
    if request.headers.get("authorization") != f"Basic {expected}":
        return JSONResponse({"error": "invalid_client"}, status_code=401)
    if request.headers.get("content-type") != "application/x-www-form-urlencoded":
        return JSONResponse({"error": "invalid_request"}, status_code=400)
    form = dict(parse_qsl((await request.body()).decode(), strict_parsing=True))
    if (
        form.get("grant_type") != GRANT
        or form.get("subject_token_type") != ACCESS
        or form.get("requested_token_type") != SHOTGRID_TOKEN_TYPE
    ):
        return JSONResponse({"error": "invalid_request"}, status_code=400)
    if form.get("subject_token") != "good-access-token":
        return JSONResponse(
            {"error": "invalid_grant", "error_description": "subject token is invalid"},
            status_code=400,
            headers={"Cache-Control": "no-store"},
        )
    return JSONResponse(
        {
            "access_token": "sg-rest-token",
            "token_type": "Bearer",
            "issued_token_type": SHOTGRID_TOKEN_TYPE,
            "expires_in": 600,
        },
        headers={"Cache-Control": "no-store"},
    )


@pytest.fixture(scope="module")
def token_server() -> Iterator[str]:
    with serve(Starlette(routes=[Route("/token", token_endpoint, methods=["POST"])])) as server:
        yield server.url


def exchange(issuer: str, token: str, secret: str = "dna-backend-secret") -> Any:
    return exchange_for_shotgrid_token(
        token, issuer=issuer, client_id="dna-backend", client_secret=secret
    )


def test_exchange_returns_a_shotgrid_bearer_token(token_server: str) -> None:
    token = exchange(token_server, "good-access-token")
    assert token.access_token == "sg-rest-token"
    assert token.issued_token_type == SHOTGRID_TOKEN_TYPE
    assert token.expires_in == 600
    assert token.authorization_header() == {"Authorization": "Bearer sg-rest-token"}


@pytest.mark.parametrize(
    ("token", "secret", "error", "status"),
    [
        ("expired-token", "dna-backend-secret", "invalid_grant", 400),
        ("good-access-token", "wrong", "invalid_client", 401),
    ],
)
def test_exchange_errors_carry_the_rfc_code(
    token_server: str, token: str, secret: str, error: str, status: int
) -> None:
    with pytest.raises(TokenExchangeError) as caught:
        exchange(token_server, token, secret)
    assert caught.value.error == error
    assert caught.value.status_code == status


def test_exchange_with_the_broker_down_is_temporarily_unavailable() -> None:
    from client_servers import free_port

    with pytest.raises(TokenExchangeError) as caught:
        exchange(f"http://127.0.0.1:{free_port()}", "good-access-token")
    assert caught.value.error == "temporarily_unavailable"


def test_async_exchange(token_server: str) -> None:
    async def go() -> str:
        token = await aexchange_for_shotgrid_token(
            "good-access-token",
            issuer=token_server,
            client_id="dna-backend",
            client_secret="dna-backend-secret",
        )
        return token.access_token

    assert asyncio.run(go()) == "sg-rest-token"
