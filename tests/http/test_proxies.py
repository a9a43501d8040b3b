"""The client address (BROKER_TRUSTED_PROXIES): the TCP peer, unless the peer is a listed
proxy, and then the right-most forwarded address that is not itself a listed proxy.
Throttling and audit events read it; a client cannot change it by sending headers.

Peers are played by binding the client socket to 127.0.0.1, .2 and .3."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.http.proxies import TrustedProxies
from broker.logs import configure_logging, unconfigure_logging
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock

pytestmark = pytest.mark.timeout(60)

PROXY = "127.0.0.3"
PER_IP = 3


def client_from(running: RunningBroker, address: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=running.url, transport=transport, timeout=10)


def failed_login(http: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    form = {"grant_type": "password", "client_id": "dna-cli", "username": "alice"}
    return http.post("/token", data={**form, "password": "wrong"}, headers=headers)


def start(tmp_path: Path, **overrides: Any) -> Any:
    return broker_with_emulator(
        tmp_path,
        MovableClock(),
        # One username from one address trips the (username, address) counter at PER_IP;
        # the address counter counts usernames, so it is kept out of the way.
        login_max_failures_per_user_ip=PER_IP,
        login_max_failures_per_ip=100,
        login_max_failures_per_user=100,
        **overrides,
    )


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    try:
        yield buffer
    finally:
        unconfigure_logging()


def lines(buffer: io.StringIO, event: str) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    return [line for line in parsed if line.get("event") == event]


SPOOFS = [
    {"X-Forwarded-For": "198.51.100.{i}"},
    {"X-Forwarded-For": "198.51.100.{i}, 203.0.113.{i}"},
    {"Forwarded": "for=198.51.100.{i}"},
    {"X-Real-IP": "198.51.100.{i}", "X-Forwarded-For": "203.0.113.{i}"},
]


@pytest.mark.parametrize("spoof", SPOOFS, ids=["xff", "xff-chain", "forwarded", "x-real-ip"])
def test_by_default_no_header_changes_the_address(
    tmp_path: Path, logs: io.StringIO, spoof: dict[str, str]
) -> None:
    """No trusted proxies (the default): from 127.0.0.1, which uvicorn alone would trust,
    rotating the headers neither escapes the per-address throttle nor reaches the logs."""
    with start(tmp_path) as (running, _emu, _site), client_from(running, "127.0.0.1") as http:
        for i in range(PER_IP):
            headers = {k: v.format(i=i) for k, v in spoof.items()}
            assert failed_login(http, headers).json()["error"] == "invalid_grant"
        headers = {k: v.format(i=99) for k, v in spoof.items()}
        assert failed_login(http, headers).status_code == 429
    logins = lines(logs, "login")
    assert len(logins) == PER_IP + 1
    assert {line["ip"] for line in logins} == {"127.0.0.1"}
    assert {line["client_ip"] for line in lines(logs, "http_request")} == {"127.0.0.1"}


def test_only_the_listed_proxy_is_believed(tmp_path: Path, logs: io.StringIO) -> None:
    with start(tmp_path, trusted_proxies=[PROXY]) as (running, _emu, _site):
        # Another peer (127.0.0.2) rotating the header: one address, throttled.
        with client_from(running, "127.0.0.2") as stranger:
            for i in range(PER_IP):
                failed_login(stranger, {"X-Forwarded-For": f"198.51.100.{i}"})
            assert failed_login(stranger, {"X-Forwarded-For": "198.51.100.77"}).status_code == 429
        # The proxy: each forwarded address is its own client...
        with client_from(running, PROXY) as proxy:
            for i in range(PER_IP + 2):
                response = failed_login(proxy, {"X-Forwarded-For": f"203.0.113.{i}"})
                assert response.json()["error"] == "invalid_grant", i
            # ...and a client's own entry (left of the proxy's) is not believed.
            for i in range(PER_IP):
                chain = f"198.51.100.{i}, 203.0.113.50"
                failed_login(proxy, {"X-Forwarded-For": chain})
            spoofed = {"X-Forwarded-For": "9.9.9.9, 203.0.113.50"}
            assert failed_login(proxy, spoofed).status_code == 429
            # The other header is not read: the proxy writes X-Forwarded-For only.
            for _ in range(PER_IP):
                failed_login(proxy, {"Forwarded": "for=198.51.100.1"})
            assert failed_login(proxy, {"Forwarded": "for=198.51.100.2"}).status_code == 429
    ips = [line["ip"] for line in lines(logs, "login")]
    assert ips[: PER_IP + 1] == ["127.0.0.2"] * (PER_IP + 1)
    proxied = ips[PER_IP + 1 :]
    assert proxied[: PER_IP + 2] == [f"203.0.113.{i}" for i in range(PER_IP + 2)]
    assert set(proxied[PER_IP + 2 : 2 * PER_IP + 3]) == {"203.0.113.50"}
    assert set(proxied[2 * PER_IP + 3 :]) == {PROXY}
    access = {line["client_ip"] for line in lines(logs, "http_request")}
    assert "198.51.100.0" not in access and "203.0.113.0" in access


def test_forwarded_header_when_the_proxy_writes_it(tmp_path: Path, logs: io.StringIO) -> None:
    with (
        start(tmp_path, trusted_proxies=[f"{PROXY}/32"], forwarded_header="forwarded") as (
            running,
            _emu,
            _site,
        ),
        client_from(running, PROXY) as proxy,
    ):
        failed_login(proxy, {"Forwarded": 'for="[2001:db8::7]:4711";proto=https'})
        failed_login(proxy, {"X-Forwarded-For": "198.51.100.1"})  # not the configured header
    assert [line["ip"] for line in lines(logs, "login")] == ["2001:db8::7", PROXY]


TRUSTED = TrustedProxies(["10.0.0.0/8", "192.0.2.1"])
TRUSTED_FORWARDED = TrustedProxies(["10.0.0.0/8", "192.0.2.1"], "forwarded")

CASES: list[tuple[str, TrustedProxies, str, list[tuple[bytes, bytes]], str]] = [
    ("untrusted peer", TRUSTED, "198.51.100.9", [(b"x-forwarded-for", b"1.2.3.4")], "198.51.100.9"),
    ("trusted, no header", TRUSTED, "10.1.2.3", [], "10.1.2.3"),
    ("trusted", TRUSTED, "10.1.2.3", [(b"x-forwarded-for", b"1.2.3.4")], "1.2.3.4"),
    (
        "right-most untrusted",
        TRUSTED,
        "10.1.2.3",
        [(b"x-forwarded-for", b"6.6.6.6, 1.2.3.4, 10.9.9.9")],
        "1.2.3.4",
    ),
    (
        "several fields",
        TRUSTED,
        "192.0.2.1",
        [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"1.2.3.4, 10.0.0.1")],
        "1.2.3.4",
    ),
    ("all trusted", TRUSTED, "10.0.0.2", [(b"x-forwarded-for", b"10.0.0.9, 10.0.0.1")], "10.0.0.9"),
    ("garbage hop", TRUSTED, "10.0.0.2", [(b"x-forwarded-for", b"1.2.3.4, nonsense")], "10.0.0.2"),
    ("v4 with port", TRUSTED, "10.0.0.2", [(b"x-forwarded-for", b"1.2.3.4:5555")], "1.2.3.4"),
    ("other header ignored", TRUSTED, "10.0.0.2", [(b"forwarded", b"for=1.2.3.4")], "10.0.0.2"),
    (
        "forwarded",
        TRUSTED_FORWARDED,
        "10.0.0.2",
        [(b"forwarded", b'for=6.6.6.6, for="[2001:db8::1]:80";by=10.0.0.2, for=10.0.0.5')],
        "2001:db8::1",
    ),
    (
        "forwarded unknown",
        TRUSTED_FORWARDED,
        "10.0.0.2",
        [(b"forwarded", b"for=1.2.3.4, for=unknown")],
        "10.0.0.2",
    ),
]


@pytest.mark.parametrize(
    ("case", "proxies", "peer", "headers", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_client_address(
    case: str,
    proxies: TrustedProxies,
    peer: str,
    headers: list[tuple[bytes, bytes]],
    expected: str,
) -> None:
    assert proxies.client_address(peer, headers) == expected
