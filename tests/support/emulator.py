"""Fixtures for emulator tests: a movable clock and a demo emulator under real uvicorn.

Import the fixtures into a test module (`from tests.support.emulator import clock, ...`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shotgrid_emulator import ShotGridEmulator
from tests.support.clock import MovableClock
from tests.support.servers import ServerThread, serve


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def emulator(clock: MovableClock) -> ShotGridEmulator:
    return ShotGridEmulator.default(clock=clock)


@pytest.fixture
def site(emulator: ShotGridEmulator) -> Iterator[ServerThread]:
    with serve(emulator.app) as server:
        yield server
