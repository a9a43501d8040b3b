"""GET/POST /logout: OIDC RP-Initiated Logout 1.0."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.broker import RunningBroker
from tests.support.oidc import Flow, clock, hidden_fields, http, login_code, query_of, running

__all__ = ["clock", "http", "running"]


def signed_in(http: httpx.Client) -> dict[str, str]:
    flow = Flow()
    body: dict[str, str] = flow.redeem(http, login_code(http, flow)).json()
    return body


def assert_signed_out(http: httpx.Client, running: RunningBroker, tokens: dict[str, str]) -> None:
    refreshed = running.refresh(http, tokens["refresh_token"], client_id="dna-frontend")
    assert refreshed.json()["error"] == "invalid_grant"
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert http.get("/userinfo", headers=bearer).status_code == 401
    page = http.get("/authorize", params=Flow().params())
    assert page.status_code == 200 and 'name="password"' in page.text


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_logout_with_hint_redirects_and_ends_everything(
    http: httpx.Client, running: RunningBroker, method: str
) -> None:
    tokens = signed_in(http)
    # A second app under the same SSO session: its family ends too.
    other = Flow(client_id="review-tool")
    review = other.redeem(
        http, query_of(http.get("/authorize", params=other.params()).headers["location"])["code"]
    ).json()
    params = {
        "id_token_hint": tokens["id_token"],
        "post_logout_redirect_uri": "http://127.0.0.1:5555/",
        "state": "bye",
    }
    if method == "GET":
        response = http.get("/logout", params=params)
    else:
        response = http.post("/logout", data=params)
    assert response.status_code == 302
    assert response.headers["location"] == "http://127.0.0.1:5555/?state=bye"
    assert (
        'broker_session=""' in response.headers["set-cookie"]
        or "Max-Age=0" in response.headers["set-cookie"]
    )
    assert_signed_out(http, running, tokens)
    assert (
        running.refresh(http, review["refresh_token"], client_id="review-tool").status_code == 400
    )


def test_logout_with_expired_hint_still_works(http: httpx.Client, running: RunningBroker) -> None:
    tokens = signed_in(http)
    running.broker.clock.advance(running.settings.access_token_ttl + 60)
    response = http.get("/logout", params={"id_token_hint": tokens["id_token"]})
    assert response.status_code == 200 and "signed out" in response.text
    page = http.get("/authorize", params=Flow().params())
    assert 'name="password"' in page.text


def test_without_hint_a_confirmation_page_guards_the_session(
    http: httpx.Client, running: RunningBroker
) -> None:
    tokens = signed_in(http)
    page = http.get(
        "/logout",
        params={
            "client_id": "dna-frontend",
            "post_logout_redirect_uri": "http://localhost:8080/",
            "state": "s1",
        },
    )
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    fields = hidden_fields(page.text)
    assert fields["post_logout_redirect_uri"] == "http://localhost:8080/"
    # A cross-site POST without the CSRF token changes nothing.
    forged = http.post("/logout", data={k: v for k, v in fields.items() if k != "csrf_token"})
    assert forged.status_code == 200 and "location" not in forged.headers
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert http.get("/userinfo", headers=bearer).status_code == 200
    # The user confirms.
    done = http.post("/logout", data=fields)
    assert done.status_code == 302
    assert done.headers["location"] == "http://localhost:8080/?state=s1"
    assert_signed_out(http, running, tokens)


ERRORS = [
    (
        "unregistered redirect",
        {"client_id": "dna-frontend", "post_logout_redirect_uri": "https://evil.example/"},
        "invalid_request",
    ),
    (
        "redirect suffix",
        {"client_id": "dna-frontend", "post_logout_redirect_uri": "http://127.0.0.1/x"},
        "invalid_request",
    ),
    (
        "redirect without client",
        {"post_logout_redirect_uri": "http://127.0.0.1/"},
        "invalid_request",
    ),
    ("unknown client", {"client_id": "nope"}, "invalid_client"),
]


@pytest.mark.parametrize(("case", "params", "error"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_render_a_page(
    http: httpx.Client, case: str, params: dict[str, str], error: str
) -> None:
    response = http.get("/logout", params=params)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert re.search(r'data-error="([^"]+)"', response.text).group(1) == error


def test_hint_for_another_client_id_is_refused(http: httpx.Client) -> None:
    tokens = signed_in(http)
    response = http.get(
        "/logout", params={"id_token_hint": tokens["id_token"], "client_id": "review-tool"}
    )
    assert response.status_code == 400


def test_forged_hint_only_gets_the_confirmation(http: httpx.Client) -> None:
    tokens = signed_in(http)
    head, body, _sig = tokens["id_token"].split(".")
    response = http.get("/logout", params={"id_token_hint": f"{head}.{body}.AAAA"})
    assert response.status_code == 200 and 'name="confirm"' in response.text
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert http.get("/userinfo", headers=bearer).status_code == 200
