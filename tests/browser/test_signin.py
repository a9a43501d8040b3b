"""Headless Chromium against a real broker and the ShotGrid emulator, for every way of
signing in: erin (SSO only) with ShotGrid sign-in into dna-frontend, approving on the
emulator's approval page that opens in a new tab, the login page continuing by itself;
dave with his password and then his two-factor code; and the device flow, with
`broker_client.login` polling on a thread while the person approves (or denies) on the
verification page. The broker's clock is moved for the 2 s ShotGrid pace, never waited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from broker_client.login import DevicePrompt, LoginDenied
from broker_client.tokencache import TokenCache

from shotgrid_emulator import ShotGridEmulator
from tests.browser.conftest import TIMEOUT_MS, spa_app
from tests.browser.test_sso import start, wait_status
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.device import PollingDevice
from tests.support.emulator import dave_totp
from tests.support.oidc import Flow
from tests.support.servers import ServerThread

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningBroker, ShotGridEmulator, MovableClock, str]]:
    clock = MovableClock()
    tmp = tmp_path_factory.mktemp("browser-signin")
    with broker_with_emulator(
        tmp, clock, shotgrid_signin_poll_interval=0.2, device_poll_interval=1
    ) as (running, emu, _site):
        spa = ServerThread(spa_app(running.url)).start()
        try:
            yield running, emu, clock, spa.url
        finally:
            spa.stop()


def open_login_page(page: Any, spa: str, running: RunningBroker) -> None:
    page.goto(spa + "/")
    page.wait_for_function("window.spa !== undefined")
    start(page, "spa.signIn('dna-frontend')")
    page.wait_for_url(running.url + "/authorize*")


def test_erin_signs_in_with_shotgrid(page: Any, env: tuple[Any, ...]) -> None:
    running, _emu, clock, spa = env
    open_login_page(page, spa, running)
    with page.context.expect_page() as opened:
        page.click("#shotgrid-sign-in")
    approval = opened.value
    approval.wait_for_url("**/app_session_request/**")
    # The login page names what ShotGrid asks to approve; ShotGrid's page shows the same.
    app_name = page.locator("#shotgrid-app-name").inner_text()
    assert app_name.startswith("ShotGrid sign-in ")
    assert "approve only that" in page.locator(".instruction").inner_text()
    assert approval.locator("#app-name").inner_text() == app_name
    approval.fill("input[name=username]", "erin")
    approval.fill("input[name=password]", "erin-pw")
    approval.click("button[name=action][value=approve]")
    approval.wait_for_selector("text=Sign-in approved")
    clock.advance(2)  # ShotGrid is polled at most every 2 s per sign-in
    page.wait_for_url(spa + "/callback*")
    wait_status(page, "signed-in")
    user = page.evaluate("spa.user()")
    assert user["sub"] == "105" and user["preferred_username"] == "erin"


def test_shotgrid_sign_in_works_without_javascript(browser: Any, env: tuple[Any, ...]) -> None:
    """The same sign-in in a browser with JavaScript off: the link starts the request, the
    next page links to ShotGrid (new tab), Continue finishes once approved."""
    running, _emu, clock, spa = env
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        flow = Flow(redirect_uri=spa + "/callback")
        page.goto(running.url + "/authorize?" + urlencode(flow.params()))
        page.click("#shotgrid-sign-in")
        page.wait_for_selector("#shotgrid-open")
        app_name = page.locator("#shotgrid-app-name").inner_text()
        with context.expect_page() as opened:
            page.click("#shotgrid-open")
        approval = opened.value
        approval.wait_for_url("**/app_session_request/**")
        assert approval.locator("#app-name").inner_text() == app_name
        approval.fill("input[name=username]", "erin")
        approval.fill("input[name=password]", "erin-pw")
        approval.click("button[name=action][value=approve]")
        approval.wait_for_selector("text=Sign-in approved")
        clock.advance(2)
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(spa + "/callback?*")
        query = parse_qs(urlsplit(page.url).query)
        assert query["state"] == [flow.state] and query["code"]
    finally:
        context.close()


def test_erin_shotgrid_sign_in_denied(page: Any, env: tuple[Any, ...]) -> None:
    running, _emu, clock, spa = env
    open_login_page(page, spa, running)
    with page.context.expect_page() as opened:
        page.click("#shotgrid-sign-in")
    approval = opened.value
    approval.wait_for_url("**/app_session_request/**")
    approval.click("button[name=action][value=deny]")
    approval.wait_for_selector("text=Sign-in denied")
    clock.advance(2)
    # A locator, not wait_for_function: the login page's CSP (script-src 'self') refuses the
    # string evaluation wait_for_function relies on.
    page.locator("#form-error", has_text="denied").wait_for()
    assert page.url.startswith(running.url + "/authorize")


def test_dave_signs_in_with_password_and_code(page: Any, env: tuple[Any, ...]) -> None:
    running, _emu, clock, spa = env
    open_login_page(page, spa, running)
    page.get_by_label("ShotGrid username").fill("dave")
    page.get_by_label("Legacy Login password").fill("dave-pw")
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_selector("input[name=code]")
    code_field = page.get_by_label("Authentication code")
    assert code_field.get_attribute("autocomplete") == "one-time-code"
    code_field.fill("000000")
    page.get_by_role("button", name="Verify").click()
    page.wait_for_selector("input[name=code]")
    assert page.get_by_role("alert").inner_text().strip()
    page.get_by_label("Authentication code").fill(dave_totp().at(clock()))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(spa + "/callback*")
    wait_status(page, "signed-in")
    assert page.evaluate("spa.user()")["sub"] == "104"


def sign_in_and_decide(page: Any, prompt: DevicePrompt, action: str) -> None:
    assert prompt.verification_uri_complete is not None
    page.goto(prompt.verification_uri_complete)
    page.get_by_label("ShotGrid username").fill("alice")
    page.get_by_label("Legacy Login password").fill("alice-pw")
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_selector("button[name=action][value=approve]")
    assert "Only continue if you started this yourself" in page.content()
    assert page.locator("#device-client").inner_text() == "DNA command line"
    assert page.locator("input[name=user_code]").input_value() == prompt.user_code
    page.click(f"button[name=action][value={action}]")
    page.wait_for_selector(f"[data-result={'approved' if action == 'approve' else 'denied'}]")


def test_device_flow_approved_in_the_browser(
    page: Any, env: tuple[Any, ...], tmp_path: Path
) -> None:
    running, _emu, clock, _spa = env
    device = PollingDevice(running, clock, TokenCache(tmp_path / "tokens.json"), real_wait=0.2)
    sign_in_and_decide(page, device.start(), "approve")
    token = device.finish()
    assert isinstance(token, str), token
    import jwt

    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "101"


def test_device_flow_denied_in_the_browser(page: Any, env: tuple[Any, ...], tmp_path: Path) -> None:
    running, _emu, clock, _spa = env
    device = PollingDevice(running, clock, TokenCache(tmp_path / "tokens.json"), real_wait=0.2)
    sign_in_and_decide(page, device.start(), "deny")
    assert isinstance(device.finish(), LoginDenied)
