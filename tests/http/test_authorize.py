"""GET/POST /authorize: every error branch, redirect URI tricks, the login page, CSRF,
SSO and prompt/max_age. A real broker and the ShotGrid emulator under uvicorn."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from broker.store import ClientRecord
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.oidc import (
    REDIRECT,
    Flow,
    hidden_fields,
    login_code,
    query_of,
    submit_login,
)

WEB_REDIRECT = "https://app.example.com/cb"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningBroker, object]]:
    clock = MovableClock()
    with broker_with_emulator(tmp_path_factory.mktemp("authorize"), clock) as (b, emu, _site):
        store = b.broker.store
        store.put_client(
            ClientRecord(
                client_id="web-app",
                name="Web App",
                public=True,
                grant_types=("authorization_code",),
                redirect_uris=(WEB_REDIRECT,),
            )
        )
        store.put_client(
            ClientRecord(
                client_id="no-code",
                public=True,
                grant_types=("password",),
                redirect_uris=("http://127.0.0.1/callback",),
            )
        )
        yield b, emu


@pytest.fixture
def running(env: tuple[RunningBroker, object]) -> RunningBroker:
    return env[0]


@pytest.fixture
def http(running: RunningBroker) -> Iterator[httpx.Client]:
    with running.client() as client:
        yield client


def error_code(page: httpx.Response) -> str:
    match = re.search(r'data-error="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


# --- errors that must never be redirected: an error page -------------------------------------
PAGE_ERRORS = [
    ("missing client_id", {"client_id": None}, "invalid_request"),
    ("unknown client", {"client_id": "nope"}, "invalid_client"),
    ("missing redirect_uri", {"redirect_uri": None}, "invalid_request"),
    ("suffix", {"redirect_uri": "http://127.0.0.1/callback/evil"}, "invalid_request"),
    ("prefix", {"redirect_uri": "http://127.0.0.1/call"}, "invalid_request"),
    ("path case", {"redirect_uri": "http://127.0.0.1/Callback"}, "invalid_request"),
    ("scheme https", {"redirect_uri": "https://127.0.0.1/callback"}, "invalid_request"),
    ("userinfo part", {"redirect_uri": "http://evil@127.0.0.1/callback"}, "invalid_request"),
    ("userinfo port", {"redirect_uri": "http://127.0.0.1:80@evil.com/callback"}, "invalid_request"),
    ("other host", {"redirect_uri": "http://127.0.0.2/callback"}, "invalid_request"),
    ("host suffix", {"redirect_uri": "http://127.0.0.1.evil.com/callback"}, "invalid_request"),
    ("extra query", {"redirect_uri": "http://127.0.0.1/callback?x=1"}, "invalid_request"),
    ("fragment", {"redirect_uri": "http://127.0.0.1/callback#x"}, "invalid_request"),
    (
        "other port, non-loopback",
        {"client_id": "web-app", "redirect_uri": "https://app.example.com:8443/cb"},
        "invalid_request",
    ),
    (
        "host case, non-loopback",
        {"client_id": "web-app", "redirect_uri": "https://APP.example.com/cb"},
        "invalid_request",
    ),
    (
        "domain suffix, non-loopback",
        {"client_id": "web-app", "redirect_uri": "https://app.example.com.evil.io/cb"},
        "invalid_request",
    ),
    (
        "http for an https URI",
        {"client_id": "web-app", "redirect_uri": "http://app.example.com/cb"},
        "invalid_request",
    ),
]


@pytest.mark.parametrize(
    ("case", "overrides", "error"), PAGE_ERRORS, ids=[c[0] for c in PAGE_ERRORS]
)
def test_untrusted_errors_render_a_page(
    http: httpx.Client, case: str, overrides: dict[str, str | None], error: str
) -> None:
    response = http.get("/authorize", params=Flow().params(**overrides))
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert error_code(response) == error


def test_repeated_parameter_is_an_error_page(http: httpx.Client) -> None:
    params = [*Flow().params().items(), ("scope", "openid")]
    response = http.get("/authorize", params=params)
    assert response.status_code == 400
    assert error_code(response) == "invalid_request"


# --- errors sent back to the (trusted) redirect URI ----------------------------------------------
REDIRECT_ERRORS = [
    ("missing response_type", {"response_type": None}, "invalid_request"),
    ("token response_type", {"response_type": "token"}, "unsupported_response_type"),
    ("id_token response_type", {"response_type": "code id_token"}, "unsupported_response_type"),
    ("fragment response_mode", {"response_mode": "fragment"}, "invalid_request"),
    ("unknown scope", {"scope": "openid admin"}, "invalid_scope"),
    (
        "no PKCE for a public client",
        {"code_challenge": None, "code_challenge_method": None},
        "invalid_request",
    ),
    ("plain PKCE", {"code_challenge_method": "plain"}, "invalid_request"),
    ("PKCE method missing", {"code_challenge_method": None}, "invalid_request"),
    ("PKCE method unknown", {"code_challenge_method": "S512"}, "invalid_request"),
    ("method without challenge", {"code_challenge": None}, "invalid_request"),
    ("malformed challenge", {"code_challenge": "short"}, "invalid_request"),
    ("prompt none+login", {"prompt": "none login"}, "invalid_request"),
    ("unknown prompt", {"prompt": "bogus"}, "invalid_request"),
    ("negative max_age", {"max_age": "-1"}, "invalid_request"),
    ("non-numeric max_age", {"max_age": "soon"}, "invalid_request"),
    ("request object", {"request": "eyJ.e30."}, "request_not_supported"),
    ("request_uri", {"request_uri": "https://x.example/r"}, "request_uri_not_supported"),
    ("state too long", {"state": "s" * 2000}, "invalid_request"),
    ("client without the code grant", {"client_id": "no-code"}, "unauthorized_client"),
    ("prompt=none without a session", {"prompt": "none"}, "login_required"),
]


@pytest.mark.parametrize(
    ("case", "overrides", "error"), REDIRECT_ERRORS, ids=[c[0] for c in REDIRECT_ERRORS]
)
def test_trusted_errors_redirect_with_state(
    http: httpx.Client,
    running: RunningBroker,
    case: str,
    overrides: dict[str, str | None],
    error: str,
) -> None:
    flow = Flow()
    response = http.get("/authorize", params=flow.params(**overrides))
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    query = query_of(location)
    assert query["error"] == error
    assert query["iss"] == running.url
    if case != "state too long":
        assert query["state"] == flow.state


# --- the login page ------------------------------------------------------------------------------
def test_login_page_renders_with_security_headers(http: httpx.Client) -> None:
    page = http.get("/authorize", params=Flow().params(login_hint="bob"))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp
    assert "form-action 'self' http://127.0.0.1:53682" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "no-store" in page.headers["cache-control"]
    assert 'name="username"' in page.text and 'name="password"' in page.text
    assert 'value="bob"' in page.text  # login_hint prefills the username
    assert "Personal Access Token" in page.text
    fields = hidden_fields(page.text)
    assert fields["client_id"] == "dna-frontend" and fields["csrf_token"]
    css = http.get(urlsplit(re.search(r'href="([^"]+\.css)"', page.text).group(1)).path)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_loopback_redirect_any_port(http: httpx.Client) -> None:
    for uri in (
        "http://127.0.0.1:1/callback",
        "http://localhost:65535/callback",
        "http://127.0.0.1/callback",
    ):
        page = http.get("/authorize", params=Flow(redirect_uri=uri).params())
        assert page.status_code == 200, uri


def test_non_loopback_exact_uri_is_accepted(http: httpx.Client) -> None:
    page = http.get(
        "/authorize", params=Flow(client_id="web-app", redirect_uri=WEB_REDIRECT).params()
    )
    assert page.status_code == 200


@pytest.mark.parametrize(
    ("username", "password"), [("alice", "wrong"), ("nobody-here", "whatever"), ("erin", "erin-pw")]
)
def test_refused_login_rerenders_form(http: httpx.Client, username: str, password: str) -> None:
    page = http.get("/authorize", params=Flow().params())
    again = submit_login(http, page, username, password)
    assert again.status_code == 200
    assert 'role="alert"' in again.text
    alert = re.search(r'role="alert"[^>]*>(.*?)</div>', again.text, re.S).group(1)
    assert alert.strip(), "an error message is shown"
    assert f'value="{username}"' in again.text
    assert password not in again.text
    assert "set-cookie" not in again.headers or "broker_session" not in again.headers["set-cookie"]
    if username == "erin":
        assert "single sign-on" in alert and "Sign in with ShotGrid" in alert


def test_unknown_user_and_wrong_password_look_identical(http: httpx.Client) -> None:
    texts = []
    for username in ("alice", "zed-unknown"):
        page = http.get("/authorize", params=Flow().params())
        again = submit_login(http, page, username, "wrong-pw")
        texts.append(re.search(r'role="alert"[^>]*>(.*?)</div>', again.text, re.S).group(1))
    assert texts[0] == texts[1]


@pytest.mark.parametrize("csrf", [None, "", "1.abc", "9999999999.forged", "other-form"])
def test_csrf_missing_or_wrong_is_refused_before_shotgrid(
    env: tuple[RunningBroker, object], http: httpx.Client, csrf: str | None
) -> None:
    emu = env[1]
    page = http.get("/authorize", params=Flow().params())
    fields = hidden_fields(page.text)
    if csrf == "other-form":
        other = http.get("/authorize", params=Flow(state="another").params())
        fields["csrf_token"] = hidden_fields(other.text)["csrf_token"]
    elif csrf is None:
        del fields["csrf_token"]
    else:
        fields["csrf_token"] = csrf
    before = emu.calls["token:password"]  # type: ignore[attr-defined]
    response = http.post("/authorize", data={**fields, "username": "alice", "password": "alice-pw"})
    assert response.status_code == 403
    assert "location" not in response.headers
    assert emu.calls["token:password"] == before  # type: ignore[attr-defined]


def test_csrf_cookie_is_required(running: RunningBroker) -> None:
    with running.client() as first, running.client() as second:
        page = first.get("/authorize", params=Flow().params())
        fields = hidden_fields(page.text)
        response = second.post(
            "/authorize", data={**fields, "username": "alice", "password": "alice-pw"}
        )
        assert response.status_code == 403


def test_tampered_request_fails_csrf(http: httpx.Client) -> None:
    page = http.get("/authorize", params=Flow().params())
    fields = hidden_fields(page.text)
    fields["redirect_uri"] = "http://127.0.0.1:9/callback"
    response = http.post("/authorize", data={**fields, "username": "alice", "password": "alice-pw"})
    assert response.status_code == 403


def test_missing_credentials(http: httpx.Client) -> None:
    page = http.get("/authorize", params=Flow().params())
    response = submit_login(http, page, "alice", "")
    assert response.status_code == 400 and 'role="alert"' in response.text


# --- SSO session --------------------------------------------------------------------------------
def test_session_cookie_and_sso(running: RunningBroker) -> None:
    with running.client() as http:
        page = http.get("/authorize", params=Flow().params())
        done = submit_login(http, page, "alice", "alice-pw")
        assert done.status_code == 302
        cookie = done.headers["set-cookie"]
        assert cookie.startswith("broker_session=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # http issuer
        # A second client gets a code at once.
        flow = Flow(client_id="review-tool", redirect_uri="http://localhost:4000/callback")
        again = http.get("/authorize", params=flow.params())
        assert again.status_code == 302
        code = query_of(again.headers["location"])["code"]
        assert flow.redeem(http, code).status_code == 200
        # prompt=none with a session works too.
        silent = http.get("/authorize", params=Flow().params(prompt="none"))
        assert "code" in query_of(silent.headers["location"])
        # prompt=login forces the form.
        forced = http.get("/authorize", params=Flow().params(prompt="login"))
        assert forced.status_code == 200 and 'name="password"' in forced.text


def test_max_age_forces_fresh_login(
    running: RunningBroker, env: tuple[RunningBroker, object]
) -> None:
    clock: MovableClock = running.broker.clock
    with running.client() as http:
        login_code(http, Flow())
        assert http.get("/authorize", params=Flow().params(max_age="60")).status_code == 302
        clock.advance(61)
        page = http.get("/authorize", params=Flow().params(max_age="60"))
        assert page.status_code == 200 and 'name="password"' in page.text
        silent = http.get("/authorize", params=Flow().params(max_age="60", prompt="none"))
        assert query_of(silent.headers["location"])["error"] == "login_required"
        done = submit_login(http, page, "alice", "alice-pw")
        assert "code" in query_of(done.headers["location"])


def test_https_issuer_uses_host_prefixed_secure_cookie(tmp_path: Path) -> None:
    from broker.http import pages

    class FakeBroker:
        issuer = "https://login.example.com"

    assert pages.session_cookie_name(FakeBroker()) == "__Host-broker_session"  # type: ignore[arg-type]
    assert pages.secure(FakeBroker())  # type: ignore[arg-type]
