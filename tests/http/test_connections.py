"""Connection limits of the server `serve` runs (broker/serving.py, broker/http/protocol.py):
a head must be complete within BROKER_HTTP_HEAD_TIMEOUT however steadily it trickles, a
connection that sends nothing is closed after BROKER_HTTP_IDLE_TIMEOUT, each worker serves
at most BROKER_HTTP_MAX_CONNECTIONS at once, and a client leaving in the middle of its
body is its own outcome (no 5xx, no traceback).

The trickling client sends one header line per TRICKLE seconds: that pace is the
behaviour under test, not a wait standing in for synchronisation. Every wait for the
server is a poll with a deadline."""

from __future__ import annotations

import contextlib
import io
import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.logs import configure_logging, unconfigure_logging
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock

pytestmark = pytest.mark.timeout(60)

HEAD_TIMEOUT = 0.5
IDLE_TIMEOUT = 0.5
TRICKLE = 0.05
DEADLINE = 20.0
"""Far beyond both timeouts: reaching it means the server never closed the connection."""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RunningBroker]:
    with broker_with_emulator(
        tmp_path,
        MovableClock(),
        http_head_timeout=HEAD_TIMEOUT,
        http_idle_timeout=IDLE_TIMEOUT,
    ) as (running, _emu, _site):
        yield running


def connect(running: RunningBroker) -> socket.socket:
    return socket.create_connection(("127.0.0.1", running.server.port), timeout=DEADLINE)


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_trickled_head_is_cut_off(broker: RunningBroker) -> None:
    with connect(broker) as sock:
        sock.sendall(b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sent = 0
        deadline = time.monotonic() + DEADLINE
        answer = b""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], TRICKLE)
            if readable:
                answer = read_until_closed(sock)
                break
            try:
                sock.sendall(b"X-Trickle-%d: a\r\n" % sent)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
        else:
            pytest.fail(f"still open after {DEADLINE} s of trickling")
    assert answer.startswith(b"HTTP/1.1 408 ") or answer == b"", answer[:80]
    assert sent * 20 < 16 * 1024  # far under the head size bound: the clock cut it off


def test_a_silent_connection_is_closed(broker: RunningBroker) -> None:
    with connect(broker) as sock:
        try:
            answer = read_until_closed(sock)
        except TimeoutError:
            pytest.fail(f"a connection that sent nothing was still open after {DEADLINE} s")
    assert answer == b""


def test_a_bare_line_break_does_not_hold_a_connection(broker: RunningBroker) -> None:
    """Bytes that begin no request (a client keeping the socket warm) start the head clock."""
    with connect(broker) as sock:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], TRICKLE)
            if readable:
                break
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"\r\n")
        else:
            pytest.fail(f"still open after {DEADLINE} s of line breaks")
        read_until_closed(sock)


def test_a_complete_request_is_answered_and_then_idles_out(broker: RunningBroker) -> None:
    with connect(broker) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = read_until_closed(sock)  # keep-alive: closed by the idle timeout
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_connections_beyond_the_cap_get_503(tmp_path: Path) -> None:
    with (
        broker_with_emulator(
            tmp_path, MovableClock(), http_max_connections=2, http_idle_timeout=30
        ) as (running, _emu, _site),
        contextlib.ExitStack() as stack,
    ):
        held = []
        for _ in range(2):
            sock = stack.enter_context(connect(running))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            held.append(sock)
        with connect(running) as third:
            third.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_until_closed(third).startswith(b"HTTP/1.1 503 ")
        held[0].close()
        # Once a held connection is gone, a new one is served (the server notices the
        # close asynchronously: poll).
        deadline = time.monotonic() + DEADLINE
        while True:
            if httpx.get(f"{running.url}/healthz", timeout=5).status_code == 200:
                break
            assert time.monotonic() < deadline, "the freed slot was never reused"
            time.sleep(0.05)


def request_counts(running: RunningBroker) -> dict[tuple[str, str], float]:
    """broker_requests_total for /token by (outcome, status)."""
    text = httpx.get(f"{running.url}/metrics", timeout=5).text
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "broker_requests_total" and sample.labels["endpoint"] == "/token":
                key = (sample.labels["outcome"], sample.labels["status"])
                counts[key] = counts.get(key, 0) + sample.value
    return counts


def test_a_client_leaving_mid_body_is_not_a_server_error(broker: RunningBroker) -> None:
    before = request_counts(broker)
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)  # after the server configured its own
    try:
        with connect(broker) as sock:
            sock.sendall(
                b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 1000\r\n\r\ngrant_type=pass"
            )
        deadline = time.monotonic() + DEADLINE
        while True:
            after = request_counts(broker)
            gone = after.get(("client_disconnected", "499"), 0)
            if gone > before.get(("client_disconnected", "499"), 0):
                break
            assert time.monotonic() < deadline, f"no client_disconnected request: {after}"
            time.sleep(0.05)
    finally:
        unconfigure_logging()
    server_errors = {k: v for k, v in after.items() if k[1].startswith("5")}
    assert server_errors == {k: v for k, v in before.items() if k[1].startswith("5")}
    logged = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    assert [line for line in logged if line.get("level") in ("error", "critical")] == []
    assert "Traceback" not in buffer.getvalue()
    assert "exception" not in {key for line in logged for key in line}
    gone_lines = [line for line in logged if line.get("outcome") == "client_disconnected"]
    assert len(gone_lines) == 1 and gone_lines[0]["endpoint"] == "/token"
