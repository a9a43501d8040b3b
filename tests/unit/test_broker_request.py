"""BrokerRequest: Authlib's request, built without re-running its transport check for a URI
that passed it (the issuer's URIs), and never skipping it for one that did not."""

from __future__ import annotations

import pytest
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import InsecureTransportError

from broker import server
from broker.server import BrokerRequest

OURS = {"_form", "_args", "client_ip", "payload"}


@pytest.fixture(autouse=True)
def fresh_uris(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """An empty set of checked URIs (the suite's other servers, a port each, fill the
    process's own up to its bound) and Authlib's transport check in force."""
    uris: set[str] = set()
    monkeypatch.setattr(server, "_SECURE_URIS", uris)
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT", raising=False)
    return uris


@pytest.mark.parametrize(
    ("method", "uri", "headers"),
    [
        ("POST", "https://auth.example.com/token", {"Authorization": "Basic eA=="}),
        ("GET", "http://127.0.0.1:8000/authorize", {}),
        ("POST", "http://localhost/revoke", {"Content-Type": "x"}),
    ],
)
def test_every_request_has_authlibs_fields(method: str, uri: str, headers: dict[str, str]) -> None:
    authlib = vars(OAuth2Request(method, uri, headers=headers))
    first = BrokerRequest(method, uri, headers, [("grant_type", "x")], client_ip="10.0.0.1")
    assert uri in server._SECURE_URIS
    again = BrokerRequest(method, uri, headers, [("grant_type", "x")], client_ip="10.0.0.1")
    for request in (first, again):
        fields = vars(request)
        assert {k: v for k, v in fields.items() if k not in OURS} == {
            k: v for k, v in authlib.items() if k not in OURS
        }
        assert request.form["grant_type"] == "x"
        assert request.client_ip == "10.0.0.1"
    assert again.headers == headers


def test_the_shared_fields_are_immutable() -> None:
    """They are copied into every request: a shared list or dict would leak between them."""
    for name, value in server._AUTHLIB_FIELDS.items():
        if name != "headers":  # replaced on every request
            assert value is None or isinstance(value, str | int | bool | tuple), name


def test_an_insecure_uri_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(InsecureTransportError):
            BrokerRequest("POST", "http://auth.example.com/token", {})
    assert "http://auth.example.com/token" not in server._SECURE_URIS


def test_past_the_bound_every_request_is_checked(fresh_uris: set[str]) -> None:
    """At most 64 URIs are remembered; the 65th is still checked, every time."""
    for port in range(64):
        BrokerRequest("POST", f"https://auth.example.com:{port}/token", {})
    assert len(fresh_uris) == 64
    uri = "https://auth.example.com:9999/token"
    for _ in range(2):
        assert vars(BrokerRequest("POST", uri, {}))["uri"] == uri
    assert uri not in fresh_uris
    with pytest.raises(InsecureTransportError):
        BrokerRequest("POST", "http://auth.example.com:9999/token", {})
