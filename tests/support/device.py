"""Helpers for device-flow tests: start a device authorization, and play the person who
signs in on the verification page and approves or denies, over HTTP with httpx keeping
the cookies (as a browser would)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.oidc import hidden_fields, submit_login

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def authorize_device(
    http: httpx.Client, client_id: str = "dna-cli", scope: str | None = None
) -> dict[str, Any]:
    data = {"client_id": client_id}
    if scope is not None:
        data["scope"] = scope
    response = http.post("/device_authorization", data=data)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def poll(http: httpx.Client, device_code: str, client_id: str = "dna-cli") -> httpx.Response:
    return http.post(
        "/token",
        data={"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": client_id},
    )


def sign_in_on_device_page(
    http: httpx.Client, user_code: str | None, username: str = "alice"
) -> httpx.Response:
    """GET /device (the login page when not signed in), sign in with the password, follow
    back to the verification page; returns that page."""
    params = {"user_code": user_code} if user_code else {}
    page = http.get("/device", params=params)
    assert page.status_code == 200, page.text
    if 'name="password"' in page.text:
        done = submit_login(http, page, username, f"{username}-pw", path="/device")
        assert done.status_code == 302, done.text
        page = http.get(done.headers["location"])
        assert page.status_code == 200, page.text
    return page


def decide(
    http: httpx.Client, page: httpx.Response, user_code: str, action: str = "approve"
) -> httpx.Response:
    csrf = hidden_fields(page.text)["csrf_token"]
    return http.post("/device", data={"csrf_token": csrf, "user_code": user_code, "action": action})


def approve(
    http: httpx.Client, user_code: str, username: str = "alice", action: str = "approve"
) -> httpx.Response:
    page = sign_in_on_device_page(http, user_code, username)
    return decide(http, page, user_code, action)
