"""The broker's parts, built once per process from the settings: the composition root.

Each part has one job and is typed by the store concerns and upstream capabilities it
uses; callers take the part they need (`components.minter`, `components.sessions`, ...)
rather than reaching through a do-everything object.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.admin_access import AdminAccess
from broker.audit_trail import AuditTrail
from broker.clock import Clock, now_ms, system_clock
from broker.sessions import Lifetimes, Sessions
from broker.settings import Settings, decode_key
from broker.signin.launcher import Launcher
from broker.signin.twofactor import TwoFactor
from broker.store import Store
from broker.throttle import LoginThrottle
from broker.tokens.crypto import Sealer
from broker.tokens.keys import KeyManager
from broker.tokens.minting import TokenMinter
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

    @property
    def issuer(self) -> str:
        return self.minter.issuer

    def now(self) -> datetime:
        return now_ms(self.clock)

    def start(self) -> None:
        """First start: make the keys; then rotate them if a rotation is due."""
        self.keys.ensure_keys()
        self.keys.rotate_if_due()


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
        sessions=Sessions(
            store,
            Lifetimes(
                refresh_idle=timedelta(seconds=settings.refresh_idle_ttl),
                absolute=timedelta(seconds=settings.refresh_absolute_ttl),
                reuse_grace=timedelta(seconds=settings.refresh_reuse_grace),
                default_audience=settings.default_audience,
            ),
            clock,
        ),
        custody=Custody(
            store,
            sealer,
            upstream,
            strategy=settings.upstream_strategy,
            clock=clock,
        ),
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
    )
