"""Fixtures for emulator tests: a movable clock and a demo emulator under real uvicorn.

Import the fixtures into a test module (`from tests.support.emulator import clock, ...`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyotp
import pytest

from shotgrid_emulator import IDLE_KEEPALIVE_SECONDS, ShotGridEmulator
from tests.support.clock import MovableClock
from tests.support.servers import ServerThread, serve

DAVE_TOTP_SECRET = "JBSWY3DPEHPK3PXP"
"""The demo's two-factor user's RFC 6238 secret (CONTRACT.md, "Demo users")."""


class DemoTOTP(pyotp.TOTP):
    """pyotp's TOTP accepting the demo's 80-bit secret (pyotp >= 2.10 wants 112 bits)."""

    min_secret_length_bits = 80


def dave_totp() -> pyotp.TOTP:
    return DemoTOTP(DAVE_TOTP_SECRET)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def emulator(clock: MovableClock) -> ShotGridEmulator:
    return ShotGridEmulator.default(clock=clock)


@pytest.fixture
def site(emulator: ShotGridEmulator) -> Iterator[ServerThread]:
    # Idle connections live as long as behind a real site's load balancer.
    with serve(emulator.app, timeout_keep_alive=IDLE_KEEPALIVE_SECONDS) as server:
        yield server
