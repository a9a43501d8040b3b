from __future__ import annotations

import pytest

from broker.redirects import origin_of, redirect_uri_allowed

REGISTERED = ("http://127.0.0.1/callback", "http://localhost/callback", "https://app.example/cb")


@pytest.mark.parametrize(
    ("candidate", "allowed"),
    [
        ("http://127.0.0.1/callback", True),
        ("http://127.0.0.1:5173/callback", True),
        ("http://localhost:3000/callback", True),
        ("https://app.example/cb", True),
        ("https://app.example:8443/cb", False),  # other port on a non-loopback URI
        ("https://app.example/cb/", False),  # suffix
        ("https://app.example/c", False),  # prefix
        ("https://APP.example/cb", False),  # case
        ("https://evil@app.example/cb", False),  # userinfo
        ("https://app.example/cb#x", False),
        ("https://app.example/cb?x=1", False),
        ("http://127.0.0.1:5173/callback/../evil", False),
        ("http://127.0.0.1.evil.example/callback", False),
        ("https://127.0.0.1:5173/callback", False),  # scheme differs
        ("http://127.0.0.1:99999/callback", False),
        ("", False),
        ("javascript:alert(1)", False),
    ],
)
def test_redirect_matching(candidate: str, allowed: bool) -> None:
    assert redirect_uri_allowed(candidate, REGISTERED) is allowed


def test_origin() -> None:
    assert origin_of("http://127.0.0.1:5173/callback") == "http://127.0.0.1:5173"
    assert origin_of("not a uri") is None
