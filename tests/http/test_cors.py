"""CORS on the endpoints browser apps call: origins derived from registered redirect URIs
(loopback: any port) or `allowed_origins`; preflight; nothing for other origins."""

from __future__ import annotations

import httpx
import pytest

from broker.http.cors import Allowlist
from broker.store import ClientRecord
from tests.support.broker import RunningBroker
from tests.support.oidc import clock, http, running

__all__ = ["clock", "http", "running"]

CLIENTS = [
    ClientRecord(
        client_id="spa", redirect_uris=("http://127.0.0.1/callback", "http://localhost/cb")
    ),
    ClientRecord(client_id="web", redirect_uris=("https://app.example.com/cb",)),
    ClientRecord(client_id="extra", allowed_origins=("https://tools.example.org",)),
]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://127.0.0.1", True),
        ("http://127.0.0.1:5173", True),
        ("http://localhost:3000", True),
        ("https://app.example.com", True),
        ("https://tools.example.org", True),
        ("https://127.0.0.1:5173", False),  # the scheme is part of the origin
        ("http://[::1]:5173", False),  # not registered
        ("https://app.example.com:8443", False),  # other port on a non-loopback origin
        ("http://app.example.com", False),
        ("https://evil.app.example.com", False),
        ("https://app.example.com.evil.io", False),
        ("http://127.0.0.1.evil.io", False),
        ("http://user@127.0.0.1:5173", False),
        ("null", False),
        ("http://127.0.0.1:99999", False),
    ],
)
def test_allowlist(origin: str, allowed: bool) -> None:
    assert Allowlist(CLIENTS).allows(origin) is allowed


PATHS = [
    ("POST", "/token"),
    ("GET", "/userinfo"),
    ("POST", "/revoke"),
    ("GET", "/jwks.json"),
    ("GET", "/.well-known/openid-configuration"),
    ("GET", "/.well-known/oauth-authorization-server"),
]


@pytest.mark.parametrize(("method", "path"), PATHS)
def test_preflight_allowed(http: httpx.Client, method: str, path: str) -> None:
    response = http.options(
        path,
        headers={
            "Origin": "http://127.0.0.1:5173",
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "http://127.0.0.1:5173"
    assert method in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"]
    assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize(
    ("origin", "headers"),
    [
        ("https://evil.example", "content-type"),
        ("http://127.0.0.1:5173", "x-custom-header"),
    ],
)
def test_preflight_refused(http: httpx.Client, origin: str, headers: str) -> None:
    response = http.options(
        "/token",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


def test_simple_requests(http: httpx.Client, running: RunningBroker) -> None:
    good = http.get("/jwks.json", headers={"Origin": "http://localhost:8080"})
    assert good.headers["access-control-allow-origin"] == "http://localhost:8080"
    assert "Origin" in good.headers["vary"]
    bad = http.get("/jwks.json", headers={"Origin": "https://evil.example"})
    assert bad.status_code == 200 and "access-control-allow-origin" not in bad.headers
    error = http.post(
        "/token", data={"grant_type": "password"}, headers={"Origin": "http://127.0.0.1:1234"}
    )
    assert error.status_code in (400, 401)
    assert error.headers["access-control-allow-origin"] == "http://127.0.0.1:1234"


def test_no_cors_on_the_login_page(http: httpx.Client) -> None:
    response = http.get("/authorize", headers={"Origin": "http://127.0.0.1:5173"})
    assert "access-control-allow-origin" not in response.headers
    preflight = http.options(
        "/authorize",
        headers={"Origin": "http://127.0.0.1:5173", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
