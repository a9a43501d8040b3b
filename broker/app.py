"""`create_app(settings)`: the Starlette application. The lifespan opens the store, the
upstream client and the keys (`broker.components`), and runs housekeeping (GC, scheduled
key rotation, the audit trail's pruning), the audit trail's flushes, and the revocation
tasks: back-channel logout delivery from the store's outbox, and the ShotGrid event-log
watcher (`broker.revocation`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from broker.audit_trail import FLUSH_INTERVAL
from broker.clock import system_clock
from broker.components import Components, build_components
from broker.endpoints.introspection import BrokerIntrospectionEndpoint
from broker.endpoints.revocation import BrokerRevocationEndpoint
from broker.grants.registry import GRANTS
from broker.http.admin_api import admin_routes, http_exception
from broker.http.admin_page import admin_page_routes
from broker.http.browser import browser_routes
from broker.http.cors import CorsMiddleware
from broker.http.dispatch import HotRoutes
from broker.http.middleware import BodyLimitMiddleware, RequestContextMiddleware
from broker.http.ops import ops_routes
from broker.http.proxies import ProxyHeadersMiddleware, TrustedProxies
from broker.http.revocations import routes as revocation_routes
from broker.http.routes import routes
from broker.http.services import routes as service_routes
from broker.http.threads import make_executor, run_on
from broker.logs import configure_logging, register_secret
from broker.revocation.backchannel import BATCH as BACKCHANNEL_BATCH
from broker.revocation.watcher import ShotGridEventWatcher
from broker.server import BrokerAuthorizationServer
from broker.settings import Settings
from broker.store import ClientRecord, Store, StoreError, StoreUnavailable, open_store
from broker.upstream import Upstream, UpstreamError
from broker.upstream.probe import UpstreamProbe
from broker.upstream.resilience import CircuitBreaker, ResilientTransport

log = logging.getLogger("broker.app")

HOUSEKEEPING_INTERVAL = 60.0


def build_server(parts: Components) -> BrokerAuthorizationServer:
    server = BrokerAuthorizationServer(parts, GRANTS)
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
) -> Upstream:
    """The ShotGrid client over the resilient, instrumented transport (breaker, retries of
    idempotent reads, metrics): see broker/upstream/resilience.py."""
    import httpx

    from broker.upstream.shotgrid import ShotGridClient

    assert settings.shotgrid_url is not None
    transport = ResilientTransport(
        httpx.HTTPTransport(limits=httpx.Limits(max_connections=50, max_keepalive_connections=20)),
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


def _housekeeping(parts: Components) -> None:
    try:
        parts.keys.rotate_if_due()
        removed = parts.store.gc(parts.now()) + parts.audit_trail.prune()
        if removed:
            log.info("garbage-collected %d expired records", removed)
    except StoreError as exc:
        log.warning("housekeeping skipped: %s", exc.__class__.__name__)


def _flush_audit(parts: Components) -> None:
    try:
        parts.audit_trail.flush()
    except StoreError as exc:
        log.warning("audit trail not flushed (kept queued): %s", exc.__class__.__name__)


class _Outage:
    """One warning when a background task starts failing, one line when it recovers: a
    store or ShotGrid outage does not write a line per poll."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing = False

    def failed(self, exc: BaseException) -> None:
        if not self.failing:
            log.warning("%s failing: %s: %s", self.what, exc.__class__.__name__, exc)
        self.failing = True

    def ok(self) -> None:
        if self.failing:
            log.info("%s recovered", self.what)
        self.failing = False


async def _deliver_backchannel(state: Any, parts: Components) -> None:
    """Deliver due back-channel logouts, each on its own worker thread, forever."""
    delivery = parts.backchannel
    outage = _Outage("back-channel logout delivery")
    while True:
        notices = []
        try:
            notices = await run_on(state, delivery.claim)
            outcomes = await asyncio.gather(
                *(run_on(state, delivery.deliver, n) for n in notices), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    # The notice stays leased, and is due again once its lease passes.
                    log.warning("back-channel logout not finished: %s", type(outcome).__name__)
            outage.ok()
        except StoreError as exc:
            outage.failed(exc)
        except Exception:
            log.exception("back-channel logout delivery failed")
        if len(notices) < BACKCHANNEL_BATCH:
            await asyncio.sleep(parts.settings.backchannel_poll)


async def _watch_shotgrid(state: Any, watcher: ShotGridEventWatcher) -> None:
    outage = _Outage("reading ShotGrid's event log")
    while True:
        try:
            await run_on(state, watcher.poll_once)
            outage.ok()
        except (StoreError, UpstreamError) as exc:
            outage.failed(exc)
        except Exception:
            log.exception("ShotGrid event watcher failed")
        await asyncio.sleep(watcher.poll)


def _start(parts: Components, seed_clients: list[ClientRecord]) -> None:
    parts.start()
    for client in seed_clients:
        if parts.store.get_client(client.client_id) is None:
            parts.store.put_client(client)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    upstream: Upstream | None = None,
    clock: Callable[[], datetime] = system_clock,
    seed_clients: Iterable[ClientRecord] = (),
    housekeeping: bool = True,
    revocation_tasks: bool | None = None,
) -> Starlette:
    """`housekeeping`: GC and key rotation every minute. `revocation_tasks` (default: as
    `housekeeping`): back-channel logout delivery and the ShotGrid event watcher."""
    run_revocation_tasks = housekeeping if revocation_tasks is None else revocation_tasks
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
        parts = build_components(settings, the_store, the_upstream, clock=clock)
        app.state.audit_sink = parts.audit_trail.record
        app.state.executor = make_executor()
        try:
            await run_on(app.state, _start, parts, list(seed_clients))
        except StoreUnavailable:
            # Start anyway: /readyz says 503 and /token answers temporarily_unavailable
            # until the store answers; keys load on first use.
            log.warning("store unreachable at start-up; serving 503 until it answers")
        app.state.components = parts
        app.state.oauth_server = build_server(parts)

        async def loop() -> None:
            while True:
                await asyncio.sleep(HOUSEKEEPING_INTERVAL)
                await run_on(app.state, _housekeeping, parts)

        async def flush_audit() -> None:
            while True:
                await asyncio.sleep(FLUSH_INTERVAL)
                if parts.audit_trail.pending():
                    await run_on(app.state, _flush_audit, parts)

        tasks = [asyncio.create_task(flush_audit())]
        if housekeeping:
            tasks.append(asyncio.create_task(loop()))
        if run_revocation_tasks:
            tasks.append(asyncio.create_task(_deliver_backchannel(app.state, parts)))
            if parts.watcher is not None:
                tasks.append(asyncio.create_task(_watch_shotgrid(app.state, parts.watcher)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # What is still queued (the last second of kept audit events) is written now.
            await run_on(app.state, _flush_audit, parts)
            with contextlib.suppress(Exception):  # the store may be down: its lease lapses
                await run_on(app.state, parts.close)
            # uvicorn runs this after in-flight requests finished (or its graceful
            # shutdown timeout passed), so no request loses its store or upstream midway.
            if app.state.upstream_probe is not None:
                await app.state.upstream_probe.aclose()
            app.state.executor.shutdown(wait=True)
            if upstream is None:
                the_upstream.close()
            if own_store:
                the_store.close()

    proxies = TrustedProxies(settings.trusted_proxies, settings.forwarded_header)
    return Starlette(
        routes=[
            *routes,
            *browser_routes,
            *service_routes,
            *revocation_routes,
            *ops_routes,
            *admin_routes,
            *admin_page_routes,
        ],
        exception_handlers={HTTPException: http_exception},
        middleware=[
            # Outermost: decides the client address before anything reads it. Without
            # trusted proxies it would change nothing: no layer to cross at all then.
            *([Middleware(ProxyHeadersMiddleware, proxies=proxies)] if proxies else []),
            Middleware(RequestContextMiddleware),
            Middleware(BodyLimitMiddleware, limit=settings.max_body_bytes),
            Middleware(CorsMiddleware),
            # Innermost: the token endpoint, JWKS and discovery without the router.
            Middleware(HotRoutes, routes=routes),
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
