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
from broker.cli import HEADER_LIMIT_BYTES, SERVER_OPTIONS
from broker.demo import demo_clients
from tests.support.broker import RunningBroker, broker_settings, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.servers import ServerThread, free_port

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


def raw_request(port: int, header_bytes: int) -> bytes:
    """Send a request whose head has `header_bytes` of padding; the answer, or b"" when the
    server cut the connection while the head was still arriving."""
    head = (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"X-Padding: "
        + b"a" * header_bytes
        + b"\r\nConnection: close\r\n\r\n"
    )
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def test_request_head_is_bounded(tmp_path: Path) -> None:
    port = free_port()
    settings = broker_settings(tmp_path, "http://127.0.0.1:9", port)
    app = create_app(
        settings, clock=MovableClock(), seed_clients=demo_clients(), housekeeping=False
    )
    options = {k: v for k, v in SERVER_OPTIONS.items() if k != "log_config"}
    server = ServerThread(app, port=port, **options).start()
    try:
        assert raw_request(port, 1024).startswith(b"HTTP/1.1 200")
        # A head larger than the bound that arrives in pieces (as a large one does).
        answer = raw_request(port, HEADER_LIMIT_BYTES * 64)
        assert answer == b"" or answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:80]
        assert raw_request(port, 1024).startswith(b"HTTP/1.1 200")  # still serving
    finally:
        server.stop()
