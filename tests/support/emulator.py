"""Fixtures for emulator tests: a movable clock and a demo emulator under real uvicorn.

Import the fixtures into a test module (`from tests.support.emulator import clock, ...`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from broker.upstream.emulator import ShotGridEmulator
from tests.support.servers import ServerThread, serve


class MovableClock:
    """An aware-UTC clock that tests move forward instead of sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


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
