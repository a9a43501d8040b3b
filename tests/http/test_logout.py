"""GET/POST /logout: OIDC RP-Initiated Logout 1.0."""

from __future__ import annotations

import re

import httpx
import jwt
import pytest

from tests.support.broker import RunningBroker
from tests.support.oidc import Flow, clock, hidden_fields, http, login_code, query_of, running

__all__ = ["clock", "http", "running"]


def signed_in(http: httpx.Client, username: str = "alice") -> dict[str, str]:
    flow = Flow()
    body: dict[str, str] = flow.redeem(http, login_code(http, flow, username)).json()
    return body


def still_signed_in(http: httpx.Client, running: RunningBroker, tokens: dict[str, str]) -> None:
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert http.get("/userinfo", headers=bearer).status_code == 200
    refreshed = running.refresh(http, tokens["refresh_token"], client_id="dna-frontend")
    assert refreshed.status_code == 200, refreshed.text
    tokens["refresh_token"] = refreshed.json()["refresh_token"]


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


def asks_first(response: httpx.Response) -> dict[str, str]:
    """The confirmation page: no redirect, no cookie cleared; its form's fields."""
    assert response.status_code == 200 and 'name="confirm"' in response.text
    assert "location" not in response.headers
    assert "broker_session=" not in response.headers.get("set-cookie", "")
    return hidden_fields(response.text)


@pytest.mark.parametrize("expired", [False, True], ids=["fresh", "expired"])
def test_a_hint_without_the_session_cookie_ends_nothing(
    http: httpx.Client, running: RunningBroker, expired: bool
) -> None:
    """OIDC RP-Initiated Logout §2: the hint is not for this browser's session (it has
    none), so the OP asks; and confirming in a browser without a session ends nothing,
    since an ID token is not a credential."""
    tokens = signed_in(http)
    if expired:
        running.broker.clock.advance(running.settings.access_token_ttl + 60)
        tokens.update(signed_in_again(http, running))  # the ID token stays the expired one
    params = {
        "id_token_hint": tokens["id_token"],
        "post_logout_redirect_uri": "http://127.0.0.1:5555/",
        "state": "bye",
    }
    with running.client() as elsewhere:  # no cookie: another browser, or a script
        fields = asks_first(elsewhere.get("/logout", params=params))
        assert fields["post_logout_redirect_uri"] == "http://127.0.0.1:5555/"
        still_signed_in(http, running, tokens)
        done = elsewhere.post("/logout", data=fields)
        assert done.status_code == 302
        assert done.headers["location"] == "http://127.0.0.1:5555/?state=bye"
    still_signed_in(http, running, tokens)


def signed_in_again(http: httpx.Client, running: RunningBroker) -> dict[str, str]:
    """Fresh tokens of the browser's SSO session (its ID token stays the old one)."""
    flow = Flow()
    location = http.get("/authorize", params=flow.params()).headers["location"]
    body = flow.redeem(http, query_of(location)["code"]).json()
    return {"access_token": body["access_token"], "refresh_token": body["refresh_token"]}


def test_a_hint_for_another_session_asks_and_ends_only_this_browsers(
    http: httpx.Client, running: RunningBroker
) -> None:
    alice = signed_in(http)
    with running.client() as other_browser:
        bob = signed_in(other_browser, "bob")
        # The RP hands bob's browser alice's (expired) ID token.
        running.broker.clock.advance(running.settings.access_token_ttl + 60)
        alice.update(signed_in_again(http, running))
        bob.update(signed_in_again(other_browser, running))
        hint = {"id_token_hint": alice["id_token"]}
        fields = asks_first(other_browser.get("/logout", params=hint))
        still_signed_in(http, running, alice)
        still_signed_in(other_browser, running, bob)
        done = other_browser.post("/logout", data=fields)
        assert done.status_code == 200 and "signed out" in done.text
        assert_signed_out(other_browser, running, bob)
    still_signed_in(http, running, alice)


def test_a_hint_dated_in_the_future_is_no_hint(http: httpx.Client, running: RunningBroker) -> None:
    """Signed by our key (e.g. one that leaked) but issued after now: not believed, even
    for the browser's own session."""
    tokens = signed_in(http)
    broker = running.broker
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    claims["iat"] = int(broker.now().timestamp()) + 3600
    forged = broker.keys.sign(claims, "JWT", "RS256")
    asks_first(http.get("/logout", params={"id_token_hint": forged}))
    still_signed_in(http, running, tokens)
