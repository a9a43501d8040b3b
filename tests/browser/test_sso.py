"""Headless Chromium + oidc-client-ts against a real broker: sign-in with the hosted login
page (and its error messages), tokens, refresh, SSO into a second app without the form,
RP-initiated logout, and the form again afterwards."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import TIMEOUT_MS
from tests.support.broker import RunningBroker

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(120)]


def status(page: Any) -> str:
    text: str = page.locator("#status").inner_text()
    return text


def wait_status(page: Any, expected: str) -> None:
    page.wait_for_function(
        "s => !['idle', 'ready'].includes(document.getElementById('status')?.textContent)"
        " && document.getElementById('status').textContent !== ''",
        timeout=TIMEOUT_MS,
    )
    assert status(page) == expected, page.locator("#detail").inner_text()


def start(page: Any, call: str) -> None:
    """Start something that navigates away (do not wait on its promise: the page goes)."""
    page.evaluate(f"() => {{ {call}; }}")


def alert_text(page: Any) -> str:
    text: str = page.get_by_role("alert").inner_text()
    return text


def test_sign_in_refresh_sso_logout(browser: Any, broker: RunningBroker, spa: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    login_pages: list[str] = []

    def on_response(response: Any) -> None:
        if response.url.startswith(broker.url + "/authorize") and response.status == 200:
            login_pages.append(response.url)

    page.on("response", on_response)
    try:
        # 1. dna-frontend: the hosted login form.
        page.goto(spa + "/")
        page.wait_for_function("window.spa !== undefined")
        start(page, "spa.signIn('dna-frontend')")
        page.wait_for_url(broker.url + "/authorize*")
        assert page.get_by_label("ShotGrid username").is_visible()
        assert page.title().startswith("Sign in")

        # erin: SSO-only account, a clear message, username kept, password not.
        page.get_by_label("ShotGrid username").fill("erin")
        page.get_by_label("Legacy Login password").fill("erin-pw")
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_load_state()
        assert "single sign-on" in alert_text(page)
        assert page.get_by_label("ShotGrid username").input_value() == "erin"
        assert page.get_by_label("Legacy Login password").input_value() == ""

        # alice with a wrong password.
        page.get_by_label("ShotGrid username").fill("alice")
        page.get_by_label("Legacy Login password").fill("not-her-password")
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_load_state()
        assert "Wrong ShotGrid username or password" in alert_text(page)
        assert page.get_by_label("ShotGrid username").input_value() == "alice"

        # alice, right password: back in the SPA with tokens and userinfo claims.
        page.get_by_label("Legacy Login password").fill("alice-pw")
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_url(spa + "/callback*")
        wait_status(page, "signed-in")
        first = page.evaluate("spa.user()")
        assert first["sub"] == "101" and first["preferred_username"] == "alice"
        assert first["email"] == "alice@example.com"  # loaded from /userinfo over CORS
        assert first["refresh_token"] and first["access_token"] and first["id_token"]
        assert len(login_pages) == 3  # the form, then erin's and the wrong password's retries

        # 2. Refresh through the token endpoint (fetch + CORS), rotating the refresh token.
        refreshed = page.evaluate("spa.refresh()")
        assert refreshed["access_token"] != first["access_token"]
        assert refreshed["refresh_token"] != first["refresh_token"]

        # 3. review-tool: SSO, no form.
        page.goto(spa + "/")
        page.wait_for_function("window.spa !== undefined")
        start(page, "spa.signIn('review-tool')")
        page.wait_for_url(spa + "/callback*")
        wait_status(page, "signed-in")
        review = page.evaluate("spa.user()")
        assert review["client"] == "review-tool" and review["sub"] == "101"
        assert len(login_pages) == 3, "SSO must not show the login form"

        # 4. Logout (id_token_hint + post_logout_redirect_uri) ends the SSO session.
        start(page, "spa.signOut()")
        page.wait_for_url(spa + "/?state=*")
        wait_status(page, "signed-out")

        # 5. The next sign-in shows the form again.
        start(page, "spa.signIn('dna-frontend')")
        page.wait_for_url(broker.url + "/authorize*")
        assert page.get_by_label("Legacy Login password").is_visible()
        assert len(login_pages) == 4
    finally:
        context.close()
