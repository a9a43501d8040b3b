"""The broker's parts, built once per process from the settings: the composition root.

Each part has one job and is typed by the store concerns and upstream capabilities it
uses; callers take the part they need (`components.minter`, `components.sessions`, ...)
rather than reaching through a do-everything object.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.admin_access import AdminAccess
from broker.audit_trail import AuditTrail
from broker.clock import Clock, now_ms, system_clock
from broker.revocation.backchannel import BackchannelDelivery
from broker.revocation.feed import RevocationFeed
from broker.revocation.watcher import ShotGridEventWatcher
from broker.sessions import Lifetimes, Sessions
from broker.settings import Settings, decode_key
from broker.signin.launcher import Launcher
from broker.signin.twofactor import TwoFactor
from broker.store import Store
from broker.throttle import LoginThrottle
from broker.tokens.crypto import Sealer
from broker.tokens.keys import KeyManager
from broker.tokens.minting import TokenMinter
from broker.tokens.revocation_feed import entry_lifetime
from broker.upstream import Upstream
from broker.upstream.custody import Custody


@dataclass(frozen=True, slots=True)
class Components:
    settings: Settings
    clock: Clock
    store: Store
    keys: KeyManager
    minter: TokenMinter
    sessions: Sessions
    custody: Custody
    upstream: Upstream
    throttle: LoginThrottle
    audit_trail: AuditTrail
    launcher: Launcher
    """Sign-in through ShotGrid's App Session Launcher."""
    two_factor: TwoFactor
    """The code step of a Legacy Login with two-factor authentication."""
    admin_access: AdminAccess
    """Who may use the admin page (their ShotGrid permission group)."""
    feed: RevocationFeed
    backchannel: BackchannelDelivery
    watcher: ShotGridEventWatcher | None
    """None when `shotgrid_events_poll` is 0 or the broker has no ShotGrid script key."""
    instance: str
    """This process's name in store leases (host, pid and a random part)."""

    @property
    def issuer(self) -> str:
        return self.minter.issuer

    def now(self) -> datetime:
        return now_ms(self.clock)

    def start(self) -> None:
        """First start: make the keys; then rotate them if a rotation is due."""
        self.keys.ensure_keys()
        self.keys.rotate_if_due()

    def close(self) -> None:
        """Release what the parts hold beyond the store and upstream (which their owner
        closes): the back-channel HTTP client, the event watcher's lease."""
        self.backchannel.close()
        if self.watcher is not None:
            self.watcher.release()


def sealer_for(settings: Settings) -> Sealer:
    if settings.secret_key is None:
        raise ValueError("secret_key is required")
    keks = [decode_key(settings.secret_key)] + [decode_key(k) for k in settings.old_secret_keys]
    return Sealer(keks)


def key_manager(settings: Settings, store: Store, sealer: Sealer, clock: Clock) -> KeyManager:
    longest = max(settings.access_token_ttl, 600)
    return KeyManager(
        store,
        sealer,
        clock=clock,
        signing_alg=settings.signing_alg,
        rotation_interval=timedelta(seconds=settings.key_rotation_interval),
        retire_after=timedelta(seconds=longest + settings.jwks_max_age),
        reload_interval=timedelta(seconds=max(1, min(60, settings.jwks_max_age // 2))),
        publish_lead=timedelta(seconds=settings.jwks_max_age),
    )


def machine_id(issuer: str) -> str:
    """The broker's stable `machineId` for the App Session Launcher: the same for every
    process and replica of one deployment (derived from the issuer)."""
    return "token-broker-" + hashlib.sha256(issuer.encode()).hexdigest()[:16]


def build_components(
    settings: Settings, store: Store, upstream: Upstream, *, clock: Clock = system_clock
) -> Components:
    if settings.issuer is None:
        raise ValueError("issuer is required")
    sealer = sealer_for(settings)
    keys = key_manager(settings, store, sealer, clock)
    throttle = LoginThrottle(store, settings, clock)
    instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    lifetime = entry_lifetime(settings.access_token_ttl)
    sessions = Sessions(
        store,
        Lifetimes(
            refresh_idle=timedelta(seconds=settings.refresh_idle_ttl),
            absolute=timedelta(seconds=settings.refresh_absolute_ttl),
            reuse_grace=timedelta(seconds=settings.refresh_reuse_grace),
            default_audience=settings.default_audience,
            revocation_entry=lifetime,
        ),
        clock,
    )
    custody = Custody(store, sealer, upstream, strategy=settings.upstream_strategy, clock=clock)
    watcher = None
    if settings.shotgrid_events_poll > 0 and upstream.script_configured:
        watcher = ShotGridEventWatcher(
            store,
            upstream,
            sessions,
            custody,
            clock,
            owner=instance,
            poll=settings.shotgrid_events_poll,
        )
    return Components(
        settings=settings,
        clock=clock,
        store=store,
        keys=keys,
        minter=TokenMinter(
            settings.issuer,
            keys,
            access_token_ttl=settings.access_token_ttl,
            default_audience=settings.default_audience,
            clock=clock,
        ),
        sessions=sessions,
        custody=custody,
        upstream=upstream,
        throttle=throttle,
        audit_trail=AuditTrail(
            store,
            clock,
            retention=timedelta(seconds=settings.audit_retention),
            max_events=settings.audit_max_events,
        ),
        launcher=Launcher(
            store,
            sealer,
            upstream,
            clock,
            site_name=settings.site_name,
            machine_id=machine_id(settings.issuer),
        ),
        two_factor=TwoFactor(sealer, store, upstream, throttle, clock),
        admin_access=AdminAccess(
            store,
            upstream,
            clock,
            groups=settings.admin_permission_groups,
            recheck=timedelta(seconds=settings.upstream_recheck),
        ),
        feed=RevocationFeed(store, keys, settings.issuer, clock, lifetime=lifetime),
        backchannel=BackchannelDelivery(
            store,
            keys,
            settings.issuer,
            clock,
            owner=instance,
            timeout=settings.backchannel_timeout,
            max_attempts=settings.backchannel_max_attempts,
            backoff=settings.backchannel_retry_backoff,
        ),
        watcher=watcher,
        instance=instance,
    )
