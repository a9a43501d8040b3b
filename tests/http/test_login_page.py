"""The hosted login page as a person meets it: messages that fit the page, an icon, colours
that stay readable whatever the accent setting, and native apps' private-use redirect
URIs. A real broker and the ShotGrid emulator under uvicorn."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

import httpx
import pytest

from broker.contrast import AA_TEXT, accent_colors, accent_warning, contrast
from broker.store import ClientRecord
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.oidc import Flow, hidden_fields, query_of, submit_login

pytestmark = pytest.mark.timeout(60)

NATIVE_REDIRECT = "com.example.dna:/oauth2redirect"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    clock = MovableClock()
    with broker_with_emulator(
        tmp_path_factory.mktemp("login-page"), clock, accent_color="#f5c518"
    ) as (broker, _emu, _site):
        broker.broker.store.put_client(
            ClientRecord(
                client_id="dna-desktop",
                name="DNA Desktop",
                public=True,
                grant_types=("authorization_code", "refresh_token"),
                redirect_uris=(NATIVE_REDIRECT,),
            )
        )
        yield broker


@pytest.fixture
def http(running: RunningBroker) -> Iterator[httpx.Client]:
    with running.client() as client:
        yield client


def alert(page: httpx.Response) -> str:
    match = re.search(r'role="alert"[^>]*>(.*?)</div>', page.text, re.S)
    assert match, page.text
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def test_two_factor_account_is_asked_for_its_code_not_sent_elsewhere(
    http: httpx.Client,
) -> None:
    """The page itself asks a two-factor account for its code (issue 14), rather than a
    message sending the person to the browser login they are on."""
    page = http.get("/authorize", params=Flow().params())
    step = submit_login(http, page, "dave", "dave-pw")
    assert step.status_code == 200 and 'name="code"' in step.text
    assert "Two-factor authentication is on" in step.text
    assert alert(step) == "" and "sign in through" not in step.text.lower()


def test_the_password_grant_keeps_its_own_advice(
    running: RunningBroker, http: httpx.Client
) -> None:
    refused = running.password_grant(http, "dave")
    assert refused.json()["error"] == "invalid_grant"
    assert "browser" in refused.json()["error_description"]


def test_favicon_is_served_and_linked(running: RunningBroker, http: httpx.Client) -> None:
    page = http.get("/authorize", params=Flow().params())
    links = re.findall(r'<link rel="icon" href="([^"]+)"', page.text)
    assert f"{running.url}/favicon.ico" in links
    assert f"{running.url}/static/favicon.svg" in links
    # the page's CSP lets the icons load: img-src 'self'
    assert "img-src 'self'" in page.headers["content-security-policy"]

    ico = http.get("/favicon.ico")
    assert ico.status_code == 200
    assert ico.headers["content-type"] == "image/x-icon"
    reserved, kind, count = struct.unpack("<HHH", ico.content[:6])
    assert (reserved, kind, count) == (0, 1, 1)
    width, height, *_, size, offset = struct.unpack("<BBBBHHII", ico.content[6:22])
    assert (width, height) == (32, 32)
    assert ico.content[offset : offset + 8] == b"\x89PNG\r\n\x1a\n"
    assert offset + size == len(ico.content)

    svg = http.get("/static/favicon.svg")
    assert svg.status_code == 200
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.headers["content-security-policy"] == "default-src 'none'"
    assert svg.text.startswith("<svg") and "<script" not in svg.text


def _css_var(css: str, name: str) -> str:
    match = re.search(rf"--{name}: (#[0-9a-f]{{6}});", css)
    assert match, css
    return match.group(1)


def test_a_light_accent_gets_readable_text(http: httpx.Client) -> None:
    css = http.get("/static/login.css").text
    accent, on_accent, link = (_css_var(css, n) for n in ("accent", "on-accent", "accent-text"))
    assert accent == "#f5c518"  # the brand colour is kept where it is a background
    assert contrast(on_accent, accent) >= AA_TEXT
    assert contrast(link, "#ffffff") >= AA_TEXT
    assert "color: var(--on-accent)" in css


@pytest.mark.parametrize(
    "accent", ["#2563eb", "#f5c518", "#ffffff", "#000000", "#777777", "#00ff00", "#ff0000"]
)
def test_contrast_rule(accent: str) -> None:
    colors = accent_colors(accent)
    assert contrast(colors.on_accent, accent) >= AA_TEXT
    assert contrast(colors.accent_text, "#ffffff") >= AA_TEXT
    warning = accent_warning(accent)
    assert (warning is None) == (not colors.adjusted)
    if warning:
        assert "\n" not in warning and warning.startswith("BROKER_ACCENT_COLOR")


def test_the_default_accent_is_used_as_given() -> None:
    colors = accent_colors("#2563eb")
    assert (colors.on_accent, colors.accent_text) == ("#ffffff", "#2563eb")
    assert accent_warning("#2563eb") is None


def test_wcag_contrast_figures() -> None:
    assert contrast("#ffffff", "#000000") == pytest.approx(21)
    assert contrast("#ffffff", "#ffffff") == pytest.approx(1)
    assert contrast("#ffffff", "#f5c518") == pytest.approx(1.63, abs=0.01)
    assert contrast("#ffffff", "#2563eb") == pytest.approx(5.17, abs=0.01)


def test_native_app_private_use_redirect(http: httpx.Client) -> None:
    """RFC 8252 §7.1: the code goes to the app's own scheme; the CSP lets the form's
    redirect reach it; the code redeems with the same URI."""
    flow = Flow(client_id="dna-desktop", redirect_uri=NATIVE_REDIRECT)
    page = http.get("/authorize", params=flow.params())
    assert page.status_code == 200, page.text
    assert "form-action 'self' com.example.dna:;" in page.headers["content-security-policy"]
    assert hidden_fields(page.text)["redirect_uri"] == NATIVE_REDIRECT
    done = submit_login(http, page, "alice", "alice-pw")
    assert done.status_code == 302
    location = done.headers["location"]
    assert location.startswith(f"{NATIVE_REDIRECT}?")
    tokens = flow.redeem(http, query_of(location)["code"])
    assert tokens.status_code == 200, tokens.text
    other = Flow(client_id="dna-desktop", redirect_uri="com.example.dna:/elsewhere")
    assert http.get("/authorize", params=other.params()).status_code == 400
