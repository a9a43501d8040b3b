"""Take the README's screenshots (docs/login-page.png, docs/device-page.png,
docs/admin-page.png) with
Playwright and Debian's Chromium, from a real broker and the ShotGrid emulator.

    .venv/bin/python docs/make_screenshots.py

The site name is "Studio ShotGrid" and dna-frontend is called "DNA", as a studio would
set them; nothing else is staged. The admin page shows alice's sessions as frank sees them:
one from the login page (dna-frontend) and one from a command-line tool at another address.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.support.broker import broker_with_emulator  # noqa: E402
from tests.support.clock import MovableClock  # noqa: E402
from tests.support.device import authorize_device, sign_in_on_device_page  # noqa: E402
from tests.support.oidc import Flow, login_code, submit_login  # noqa: E402

SIZE = {"width": 900, "height": 900}
ADMIN_SIZE = {"width": 1200, "height": 760}


def admin_cookies(running: Any) -> list[dict[str, str]]:
    """alice signed in twice (a browser, a command-line tool elsewhere); frank signed in
    at /admin: his browser's cookies."""
    browser_agent = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0 Safari/537.36"
    )
    with httpx.Client(
        base_url=running.url,
        transport=httpx.HTTPTransport(local_address="127.0.0.2"),
        headers={"User-Agent": browser_agent},
    ) as alice:
        flow = Flow(redirect_uri="http://127.0.0.1:5173/callback")
        flow.redeem(alice, login_code(alice, flow, "alice"))
    with httpx.Client(
        base_url=running.url,
        transport=httpx.HTTPTransport(local_address="127.0.0.3"),
        headers={"User-Agent": "dna-cli/2.4 (python-httpx)"},
    ) as tool:
        running.password_grant(tool, "alice")
    with running.client() as frank:
        submit_login(frank, frank.get("/admin"), "frank", "frank-pw", path="/admin")
        return [
            {"name": name, "value": value, "url": running.url}
            for name, value in frank.cookies.items()
        ]


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        broker_with_emulator(Path(tmp), MovableClock(), site_name="Studio ShotGrid") as (
            running,
            _emu,
            _site,
        ),
    ):
        with running.client() as http:
            device = authorize_device(http, scope="openid profile email offline_access")
            sign_in_on_device_page(http, device["user_code"])
            cookies = [
                {"name": name, "value": value, "url": running.url}
                for name, value in http.cookies.items()
            ]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=SIZE)
            page.goto(
                running.url
                + "/authorize?"
                + "&".join(
                    f"{k}={v}"
                    for k, v in Flow(redirect_uri="http://127.0.0.1:5173/callback")
                    .params(scope="openid")
                    .items()
                )
            )
            page.screenshot(path=str(ROOT / "docs" / "login-page.png"), full_page=True)
            context = browser.new_context(viewport=SIZE)
            context.add_cookies(cookies)  # type: ignore[arg-type]
            device_page = context.new_page()
            device_page.goto(device["verification_uri_complete"])
            device_page.screenshot(path=str(ROOT / "docs" / "device-page.png"), full_page=True)
            admin_screenshot(browser)
            browser.close()


def admin_screenshot(browser: Any) -> None:
    """On a broker of its own, so only the sessions staged for it show."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        broker_with_emulator(Path(tmp), MovableClock(), site_name="Studio ShotGrid") as (
            running,
            _emu,
            _site,
        ),
    ):
        context = browser.new_context(viewport=ADMIN_SIZE)
        context.add_cookies(admin_cookies(running))
        page = context.new_page()
        page.goto(running.url + "/admin?login=alice")
        page.screenshot(path=str(ROOT / "docs" / "admin-page.png"), full_page=True)
        context.close()


if __name__ == "__main__":
    main()
