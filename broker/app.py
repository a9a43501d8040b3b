"""`create_app(settings)`: the Starlette application. The lifespan opens the store, the
upstream client and the keys, and runs housekeeping (GC, scheduled key rotation)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware

from broker.core import Broker, system_clock
from broker.endpoints.introspection import BrokerIntrospectionEndpoint
from broker.endpoints.revocation import BrokerRevocationEndpoint
from broker.grants.authorization_code import AuthorizationCodeGrant
from broker.grants.client_credentials import ClientCredentialsGrant
from broker.grants.password import PasswordGrant
from broker.grants.refresh_token import RefreshTokenGrant
from broker.grants.token_exchange import TokenExchangeGrant
from broker.http.browser import browser_routes
from broker.http.cors import CorsMiddleware
from broker.http.routes import routes
from broker.http.services import routes as service_routes
from broker.http.threads import make_executor
from broker.server import BrokerAuthorizationServer
from broker.settings import Settings
from broker.store import ClientRecord, Store, StoreError, StoreUnavailable, open_store

log = logging.getLogger("broker.app")

HOUSEKEEPING_INTERVAL = 60.0


def build_server(broker: Broker) -> BrokerAuthorizationServer:
    server = BrokerAuthorizationServer(broker)
    server.register_grant(PasswordGrant)
    server.register_grant(RefreshTokenGrant)
    server.register_grant(AuthorizationCodeGrant)
    server.register_grant(ClientCredentialsGrant)
    server.register_grant(TokenExchangeGrant)
    server.register_endpoint(BrokerRevocationEndpoint)
    server.register_endpoint(BrokerIntrospectionEndpoint)
    return server


def make_upstream(settings: Settings, clock: Callable[[], datetime] = system_clock) -> Any:
    from broker.upstream.shotgrid import ShotGridClient

    assert settings.shotgrid_url is not None
    return ShotGridClient(
        settings.shotgrid_url,
        script_name=settings.shotgrid_script_name,
        script_key=(
            settings.shotgrid_script_key.get_secret_value()
            if settings.shotgrid_script_key
            else None
        ),
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_read_timeout,
        clock=clock,
    )


def _housekeeping(broker: Broker) -> None:
    try:
        broker.keys.rotate_if_due()
        removed = broker.store.gc(broker.now())
        if removed:
            log.info("garbage-collected %d expired records", removed)
    except StoreError as exc:
        log.warning("housekeeping skipped: %s", exc.__class__.__name__)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    upstream: Any = None,
    clock: Callable[[], datetime] = system_clock,
    seed_clients: Iterable[ClientRecord] = (),
    housekeeping: bool = True,
) -> Starlette:
    if settings.allow_insecure_issuer:
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own_store = store is None
        the_store = store if store is not None else open_store(settings.store_url or "")
        the_upstream = upstream if upstream is not None else make_upstream(settings, clock)
        broker = Broker(settings, the_store, the_upstream, clock=clock)
        app.state.executor = make_executor()
        try:
            await run_in_threadpool(broker.start)
            for client in seed_clients:
                if await run_in_threadpool(the_store.get_client, client.client_id) is None:
                    await run_in_threadpool(the_store.put_client, client)
        except StoreUnavailable:
            # Start anyway: /readyz says 503 and /token answers temporarily_unavailable
            # until the store answers; keys load on first use.
            log.warning("store unreachable at start-up; serving 503 until it answers")
        app.state.broker = broker
        app.state.oauth_server = build_server(broker)

        async def loop() -> None:
            while True:
                await asyncio.sleep(HOUSEKEEPING_INTERVAL)
                await run_in_threadpool(_housekeeping, broker)

        task = asyncio.create_task(loop()) if housekeeping else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if upstream is None and hasattr(the_upstream, "aclose"):
                await the_upstream.aclose()
            app.state.executor.shutdown(wait=True)
            if own_store:
                the_store.close()

    return Starlette(
        routes=[*routes, *browser_routes, *service_routes],
        middleware=[Middleware(CorsMiddleware)],
        lifespan=lifespan,
    )


def app_from_environment() -> Starlette:
    """uvicorn factory for `serve` (one call per worker): settings from the environment
    and the TOML file named by TOKEN_BROKER_CONFIG."""
    from broker.settings import load_settings

    settings = load_settings(os.environ.get("TOKEN_BROKER_CONFIG") or None)
    return create_app(settings)
