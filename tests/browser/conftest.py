"""Fixtures for the browser tests: Debian's Chromium (installed with apt-get when missing,
never a downloaded browser), Playwright driving it, a real broker with the ShotGrid
emulator, and the test SPA served on its own loopback port."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.servers import ServerThread

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 15_000
"""How long any page step may take on a machine loaded by the parallel suite."""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SPA_DIR = Path(__file__).parent / "spa"


def _apt(*args: str) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(
            ["apt-get", *args], env=env, capture_output=True, timeout=900, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def ensure_chromium() -> str:
    """Debian's chromium, installed on demand (CI runs as root on a fresh machine)."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(
            "BROWSER TESTS SKIPPED: /usr/bin/chromium is missing and apt-get cannot run "
            "here (not root or not Debian); install the 'chromium' package."
        )
    # The suite's workers (pytest-xdist) may all get here at once; apt-get takes dpkg's lock
    # and fails for the second, so one installs while the others wait on this file lock.
    with open("/tmp/shotgrid-token-broker-chromium.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.access(CHROMIUM, os.X_OK) and not _apt("install", "-y", "-q", "chromium"):
            _apt("update", "-q")
            _apt("install", "-y", "-q", "chromium")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            "BROWSER TESTS SKIPPED: 'apt-get install -y chromium' failed, so there is no "
            "/usr/bin/chromium to drive."
        )
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return ensure_chromium()


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="BROWSER TESTS SKIPPED: pip package 'playwright' missing"
    )
    # Module scope, not session: Playwright's sync API keeps an event loop running in this
    # thread while it is open, which would break later tests that call asyncio.run().
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and its page, closed after the test."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RunningBroker]:
    with broker_with_emulator(tmp_path, MovableClock()) as (running, _emu, _site):
        yield running


def spa_app(issuer: str) -> Starlette:
    async def index(request: Request) -> Response:
        return FileResponse(SPA_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def app_js(request: Request) -> Response:
        return FileResponse(SPA_DIR / "app.js", media_type="text/javascript")

    async def config(request: Request) -> Response:
        return Response(f"window.BROKER_ISSUER = {issuer!r};\n", media_type="text/javascript")

    return Starlette(
        routes=[
            Route("/", index),
            Route("/callback", index),
            Route("/app.js", app_js),
            Route("/config.js", config),
            Mount("/vendor", StaticFiles(directory=SPA_DIR / "vendor")),
        ]
    )


@pytest.fixture
def spa(broker: RunningBroker) -> Iterator[str]:
    server = ServerThread(spa_app(broker.url)).start()
    try:
        yield server.url
    finally:
        server.stop()
