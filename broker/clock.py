"""Time, from one injectable source: tests move a clock instead of sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from broker.store.records import ms

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def now_ms(clock: Clock) -> datetime:
    """The clock's time at the precision every store keeps (milliseconds, UTC)."""
    return ms(clock())
