"""Hardening at the HTTP edge: `Cache-Control: no-store` and `Pragma: no-cache` on every
token response (errors included), and the header size bound `serve` gives uvicorn."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.app import create_app
from broker.cli import SERVER_OPTIONS
from broker.demo import demo_clients
from broker.http.protocol import HEAD_LIMIT_BYTES
from broker.serving import server_options
from tests.support.broker import RunningBroker, broker_settings, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.servers import ServerThread, reserve_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    tmp: Path = tmp_path_factory.mktemp("hardening")
    with broker_with_emulator(tmp, MovableClock(), max_body_bytes=4096) as (running, _e, _s):
        yield running


CASES: list[tuple[str, dict[str, Any], int]] = [
    (
        "password ok",
        {
            "data": {
                "grant_type": "password",
                "client_id": "dna-cli",
                "username": "alice",
                "password": "alice-pw",
            }
        },
        200,
    ),
    (
        "wrong password",
        {
            "data": {
                "grant_type": "password",
                "client_id": "dna-cli",
                "username": "alice",
                "password": "nope",
            }
        },
        400,
    ),
    (
        "unknown client",
        {
            "data": {
                "grant_type": "password",
                "client_id": "nobody",
                "username": "alice",
                "password": "x",
            }
        },
        400,
    ),
    (
        "bad secret",
        {
            "data": {"grant_type": "password", "username": "a", "password": "b"},
            "auth": ("dna-backend", "wrong"),
        },
        401,
    ),
    ("unsupported grant", {"data": {"grant_type": "magic", "client_id": "dna-cli"}}, 400),
    (
        "bad refresh",
        {"data": {"grant_type": "refresh_token", "client_id": "dna-cli", "refresh_token": "x.y.z"}},
        400,
    ),
    ("json body", {"json": {"grant_type": "password"}}, 400),
    (
        "repeated parameter",
        {
            "content": b"grant_type=password&grant_type=password",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
        400,
    ),
    (
        "too large",
        {
            "content": b"a=" + b"x" * 5000,
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
        413,
    ),
]


@pytest.mark.parametrize(("name", "request_kwargs", "status"), CASES, ids=[c[0] for c in CASES])
def test_token_responses_are_never_cached(
    broker: RunningBroker, name: str, request_kwargs: dict[str, Any], status: int
) -> None:
    response = httpx.post(f"{broker.url}/token", **request_kwargs)
    assert response.status_code == status, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["content-type"].startswith("application/json")


def exchange(port: int, pieces: list[bytes]) -> bytes:
    """Send `pieces` (one write each) on a fresh connection, then read until the server
    closes it; what came back (b"" when the server cut the connection without answering)."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for piece in pieces:
                sock.sendall(piece)
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def head(padding: int, *, end: bytes = b"\r\nConnection: close\r\n\r\n") -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * padding + end


def raw_request(port: int, header_bytes: int) -> bytes:
    """Send a request whose head has `header_bytes` of padding in one write; the answer,
    or b"" when the server cut the connection while the head was still arriving."""
    return exchange(port, [head(header_bytes)])


def status_of(answer: bytes) -> bytes:
    return answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.1 ") else answer[:40]


@pytest.fixture(scope="module")
def serve_options_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A broker served with exactly `serve`'s uvicorn options."""
    tmp: Path = tmp_path_factory.mktemp("serve-options")
    port = reserve_port()
    settings = broker_settings(tmp, "http://127.0.0.1:9", port)
    app = create_app(
        settings, clock=MovableClock(), seed_clients=demo_clients(), housekeeping=False
    )
    options = {k: v for k, v in SERVER_OPTIONS.items() if k != "log_config"}
    server = ServerThread(app, port=port, **server_options(settings), **options).start()
    try:
        yield port
    finally:
        server.stop()


def test_request_head_is_bounded(serve_options_port: int) -> None:
    port = serve_options_port
    assert raw_request(port, 1024).startswith(b"HTTP/1.1 200")
    # A head larger than the bound that arrives in pieces (as a large one does).
    answer = raw_request(port, HEAD_LIMIT_BYTES * 64)
    assert answer == b"" or status_of(answer) in (b"400", b"431"), answer[:80]
    assert raw_request(port, 1024).startswith(b"HTTP/1.1 200")  # still serving


def test_a_head_just_over_the_bound_gets_431(serve_options_port: int) -> None:
    """Complete heads are measured exactly, however they were split into reads."""
    port = serve_options_port
    under = head(HEAD_LIMIT_BYTES - 512)
    over = head(HEAD_LIMIT_BYTES + 64)
    assert status_of(exchange(port, [under])) == b"200"
    assert status_of(exchange(port, [under[:100], under[100:]])) == b"200"
    assert status_of(exchange(port, [over])) == b"431"
    answer = exchange(port, [over[: len(over) // 2], over[len(over) // 2 :]])
    assert status_of(answer) == b"431"
    assert b"connection: close" in answer.lower()


def test_a_head_that_never_ends_is_cut_off(serve_options_port: int) -> None:
    """A client streaming a header without end is refused once its head passes the bound,
    not buffered for ever (httptools would keep appending to the unfinished value)."""
    start = head(16, end=b"")
    pieces = [start] + [b"a" * 1024] * (4 * HEAD_LIMIT_BYTES // 1024)
    assert status_of(exchange(port=serve_options_port, pieces=pieces)) == b"431"


def test_pipelined_requests_with_bodies_are_not_miscounted(serve_options_port: int) -> None:
    """A read holding one request's body and the next request's head counts nothing
    against the bound: both are answered."""
    body = b"grant_type=password&client_id=dna-cli&padding=" + b"x" * 3000
    first = (
        b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    second = head(HEAD_LIMIT_BYTES - 1024)
    answer = exchange(serve_options_port, [first + second])
    assert answer.count(b"HTTP/1.1 ") == 2, answer[:200]
    assert answer.startswith(b"HTTP/1.1 400")  # invalid_request: no username
    assert b"HTTP/1.1 200" in answer
