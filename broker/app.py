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
from broker.http.middleware import BodyLimitMiddleware, RequestContextMiddleware
from broker.http.ops import ops_routes
from broker.http.routes import routes
from broker.http.services import routes as service_routes
from broker.http.threads import make_executor
from broker.logs import configure_logging, register_secret
from broker.server import BrokerAuthorizationServer
from broker.settings import Settings
from broker.store import ClientRecord, Store, StoreError, StoreUnavailable, open_store
from broker.upstream.probe import UpstreamProbe
from broker.upstream.resilience import CircuitBreaker, ResilientTransport

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


def make_breaker(settings: Settings, clock: Callable[[], datetime]) -> CircuitBreaker:
    return CircuitBreaker(
        settings.upstream_circuit_failures, settings.upstream_circuit_cooldown, clock
    )


def make_upstream(
    settings: Settings,
    clock: Callable[[], datetime] = system_clock,
    breaker: CircuitBreaker | None = None,
) -> Any:
    """The ShotGrid client over the resilient, instrumented transport (breaker, retries of
    idempotent reads, metrics): see broker/upstream/resilience.py."""
    import httpx

    from broker.upstream.shotgrid import ShotGridClient

    assert settings.shotgrid_url is not None
    transport = ResilientTransport(
        httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20)
        ),
        breaker=breaker or make_breaker(settings, clock),
        retries=settings.upstream_retries,
        backoff=settings.upstream_retry_backoff,
    )
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
        transport=transport,
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
    for secret in (settings.secret_key, *settings.old_secret_keys, settings.shotgrid_script_key):
        register_secret(secret.get_secret_value() if secret else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own_store = store is None
        the_store = store if store is not None else open_store(settings.store_url or "")
        breaker = make_breaker(settings, clock)
        the_upstream = upstream if upstream is not None else make_upstream(settings, clock, breaker)
        app.state.upstream_probe = (
            UpstreamProbe(
                settings.shotgrid_url,
                timeout=settings.readyz_upstream_timeout,
                cache_seconds=settings.readyz_upstream_cache,
                clock=clock,
                breaker=breaker if upstream is None else None,
            )
            if settings.shotgrid_url
            else None
        )
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
            # uvicorn runs this after in-flight requests finished (or its graceful
            # shutdown timeout passed), so no request loses its store or upstream midway.
            if app.state.upstream_probe is not None:
                await app.state.upstream_probe.aclose()
            if upstream is None and hasattr(the_upstream, "aclose"):
                await the_upstream.aclose()
            app.state.executor.shutdown(wait=True)
            if own_store:
                the_store.close()

    return Starlette(
        routes=[*routes, *browser_routes, *service_routes, *ops_routes],
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(BodyLimitMiddleware, limit=settings.max_body_bytes),
            Middleware(CorsMiddleware),
        ],
        lifespan=lifespan,
    )


def app_from_environment() -> Starlette:
    """uvicorn factory for `serve` (one call per worker): settings from the environment
    and the TOML file named by TOKEN_BROKER_CONFIG."""
    from broker.settings import load_settings

    settings = load_settings(os.environ.get("TOKEN_BROKER_CONFIG") or None)
    configure_logging(settings.log_level, settings.log_format)
    if settings.pin_workers:
        from broker.affinity import pin_to_own_cpu

        cpu = pin_to_own_cpu()
        if cpu is None:
            log.warning("BROKER_PIN_WORKERS: every allowed CPU is taken; running unpinned")
        else:
            log.info("worker pinned to CPU %d", cpu)
    return create_app(settings)
