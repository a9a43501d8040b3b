"""Take the README's screenshots (docs/login-page.png, docs/device-page.png) with
Playwright and Debian's Chromium, from a real broker and the ShotGrid emulator.

    .venv/bin/python docs/make_screenshots.py

The site name is "Studio ShotGrid" and dna-frontend is called "DNA", as a studio would
set them; nothing else is staged.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.support.broker import broker_with_emulator  # noqa: E402
from tests.support.clock import MovableClock  # noqa: E402
from tests.support.device import authorize_device, sign_in_on_device_page  # noqa: E402
from tests.support.oidc import Flow  # noqa: E402

SIZE = {"width": 900, "height": 900}


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
            browser.close()


if __name__ == "__main__":
    main()
