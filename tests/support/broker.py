"""A real broker for tests: SQLite in a tmp dir, the demo clients, the emulator upstream,
served by uvicorn on a free port; with the same movable clock for broker and emulator."""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from broker.app import create_app
from broker.demo import DEMO_SCRIPT, demo_clients
from broker.serving import server_options
from broker.settings import Settings, load_settings
from shotgrid_emulator import IDLE_KEEPALIVE_SECONDS, ShotGridEmulator
from tests.support.clock import MovableClock
from tests.support.servers import ServerThread, reserve_port


def new_kek() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


@dataclass
class RunningBroker:
    url: str
    settings: Settings
    server: ServerThread
    app: Any

    @property
    def broker(self) -> Any:
        return self.app.state.components

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def password_grant(
        self, http: httpx.Client, username: str = "alice", password: str | None = None, **extra: str
    ) -> httpx.Response:
        data = {
            "grant_type": "password",
            "client_id": "dna-cli",
            "username": username,
            "password": password if password is not None else f"{username}-pw",
            **extra,
        }
        return http.post("/token", data=data)

    def refresh(
        self, http: httpx.Client, token: str, client_id: str = "dna-cli", **extra: str
    ) -> httpx.Response:
        data = {
            "grant_type": "refresh_token",
            "client_id": client_id,
            "refresh_token": token,
            **extra,
        }
        return http.post("/token", data=data)


def broker_settings(data_dir: Path, shotgrid_url: str, port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "issuer": f"http://127.0.0.1:{port}",
        "shotgrid_url": shotgrid_url,
        "store_url": f"sqlite:///{data_dir / 'broker.db'}",
        "secret_key": new_kek(),
        "shotgrid_script_name": DEMO_SCRIPT[0],
        "shotgrid_script_key": DEMO_SCRIPT[1],
        "upstream_read_timeout": 2.0,
        "log_format": "console",
    }
    values.update(overrides)
    return load_settings(**values)


@contextlib.contextmanager
def run_broker(
    settings: Settings, clock: MovableClock, port: int, **app_options: Any
) -> Iterator[RunningBroker]:
    """`app_options` go to `create_app` (`revocation_tasks=True`, `store=...`)."""
    app = create_app(
        settings, clock=clock, seed_clients=demo_clients(), housekeeping=False, **app_options
    )
    # The server options `serve` derives from the settings (parser with its head bound and
    # timeout, idle timeout, connection cap, no uvicorn forwarded-header trust).
    server = ServerThread(app, port=port, **server_options(settings)).start()
    try:
        yield RunningBroker(
            url=f"http://127.0.0.1:{port}", settings=settings, server=server, app=app
        )
    finally:
        server.stop()


@contextlib.contextmanager
def broker_with_emulator(
    tmp_path: Path,
    clock: MovableClock,
    emulator: ShotGridEmulator | None = None,
    *,
    app_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> Iterator[tuple[RunningBroker, ShotGridEmulator, ServerThread]]:
    emu = emulator or ShotGridEmulator.default(clock=clock)
    site = ServerThread(emu.app, timeout_keep_alive=IDLE_KEEPALIVE_SECONDS).start()
    port = reserve_port()
    settings = broker_settings(tmp_path, site.url, port, **overrides)
    try:
        with run_broker(settings, clock, port, **(app_options or {})) as running:
            yield running, emu, site
    finally:
        site.stop()
