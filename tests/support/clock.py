"""A movable clock: tests of expiry and grace move it instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class MovableClock:
    """An aware-UTC clock that starts at wall time and only moves when told."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
