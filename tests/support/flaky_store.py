"""A real SQLite store behind a switch: `down = True` makes every call raise
StoreUnavailable, as a store that timed out would (the fault injection of the store,
like the emulator's faults for ShotGrid)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from broker.app import create_app
from broker.demo import demo_clients
from broker.store import Store, StoreUnavailable, open_store
from shotgrid_emulator import ShotGridEmulator
from tests.support.broker import broker_settings
from tests.support.clock import MovableClock
from tests.support.servers import ServerThread, reserve_port


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


@dataclass
class FlakyBroker:
    url: str
    app: Starlette
    store: FlakyStore
    emulator: ShotGridEmulator


@contextlib.contextmanager
def broker_on_flaky_store(
    tmp_path: Path, clock: MovableClock, **overrides: Any
) -> Iterator[FlakyBroker]:
    """A broker (demo clients, no housekeeping) on a FlakyStore and its own emulator."""
    emu = ShotGridEmulator.default(clock=clock)
    site = ServerThread(emu.app).start()
    port = reserve_port()
    settings = broker_settings(tmp_path, site.url, port, **overrides)
    store = FlakyStore(settings.store_url or "")
    app = create_app(
        settings,
        store=store,  # type: ignore[arg-type]
        clock=clock,
        seed_clients=demo_clients(),
        housekeeping=False,
    )
    server = ServerThread(app, port=port).start()
    try:
        yield FlakyBroker(f"http://127.0.0.1:{port}", app, store, emu)
    finally:
        server.stop()
        site.stop()
        store.inner.close()
