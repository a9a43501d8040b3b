"""A real SQLite store behind a switch: `down = True` makes every call raise
StoreUnavailable, as a store that timed out would (the fault injection of the store,
like the emulator's faults for ShotGrid)."""

from __future__ import annotations

from typing import Any

from broker.store import Store, StoreUnavailable, open_store


class FlakyStore:
    def __init__(self, url: str) -> None:
        self.inner: Store = open_store(url)
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name == "close":
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StoreUnavailable("injected: store timed out")
            return attr(*args, **kwargs)

        return call
