"""The app's background tasks (back-channel delivery, the ShotGrid event watcher) say once
that they are failing and once that they recovered, not once per poll."""

from __future__ import annotations

import logging

from broker.app import _Outage
from broker.store import StoreUnavailable


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_one_line_per_outage_and_per_recovery() -> None:
    lines = Lines()
    logger = logging.getLogger("broker.app")
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        outage = _Outage("delivery")
        outage.ok()
        for _ in range(5):
            outage.failed(StoreUnavailable("down"))
        outage.ok()
        outage.ok()
        outage.failed(StoreUnavailable("down again"))
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    assert [(r.levelno, r.getMessage()) for r in lines.records] == [
        (logging.WARNING, "delivery failing: StoreUnavailable: down"),
        (logging.INFO, "delivery recovered"),
        (logging.WARNING, "delivery failing: StoreUnavailable: down again"),
    ]
