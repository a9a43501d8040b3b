"""What an administrator may do over HTTP, and who that administrator is.

`Admin` is the principal: who acts, built from a bearer token for the API
(`admin_from_bearer`) and, for the admin page, from a signed-in person whose ShotGrid
permission group allows it (`admin_from_session`). Every action is a plain synchronous function of
the components and that principal, so the API and the page call the same ones; the
client and key actions go through `broker.admin`, the very functions behind
`token-broker clients` and `token-broker keys`. Changes are audited as `admin` events
naming the administrator (`admin=client:<id>` or `user:<login>`); `perform` wraps a call
with authentication, the rate limit and the `broker_admin_actions_total` metric.

Refusals are `AdminRefusal` subclasses carrying their HTTP status and problem type
(RFC 7807), so the HTTP layer renders every one the same way and never answers a 5xx for
a store outage (`Unavailable`, 503 with Retry-After).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from broker import admin as registry
from broker import metrics
from broker.client_policy import ClientPolicyError
from broker.components import Components
from broker.events import audit
from broker.grants import ADMIN_SCOPE, admin_audience
from broker.store import AuditRecord, ClientRecord, KeyRecord, SessionRecord, StoreError
from broker.tokens.access import InactiveToken, validate_access_token
from broker.upstream import UnknownUser, UpstreamError, UpstreamUnavailable

log = logging.getLogger("broker.admin_actions")

T = TypeVar("T")

END_REASON = "admin"
"""The reason an admin's session end gives (`revoked_reason` of its families)."""
RATE_WINDOW = timedelta(minutes=1)
MAX_LOGIN = 256
MAX_ID = 200
AUDIT_LIMIT_MAX = 1000


# --- who acts --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Admin:
    """Who acts through the admin API: a client with the admin right (its own
    client_credentials token) or, on the admin page, a person in an admin permission
    group. `actor` is how audit events name them."""

    kind: Literal["client", "user"]
    name: str
    """The client id, or the person's ShotGrid login."""
    ip: str | None = None
    user_id: int | None = None
    sid: str | None = None
    """The person's broker session (the page), None for a client."""

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"


# --- refusals --------------------------------------------------------------------------------
class AdminRefusal(Exception):
    """An admin request refused: HTTP status, RFC 7807 problem type and title, the metric
    outcome; the message is the problem's `detail` (safe to show: no secret in it)."""

    status = 400
    problem = "invalid-request"
    title = "Invalid request"
    outcome = "invalid"

    def __init__(self, detail: str, *, field: str | None = None, error: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.error = error
        """An OAuth error code that says more (RFC 7591 §3.2.2 for registrations)."""


class Unauthenticated(AdminRefusal):
    status = 401
    problem = "unauthenticated"
    title = "Authentication required"
    outcome = "unauthenticated"

    def __init__(self, detail: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(detail)
        self.error = error
        """RFC 6750 §3.1 error code for the challenge; None when no token was sent."""


class InsufficientScope(AdminRefusal):
    status = 403
    problem = "insufficient-scope"
    title = "Insufficient scope"
    outcome = "forbidden"


class Forbidden(AdminRefusal):
    status = 403
    problem = "forbidden"
    title = "Not an administrator"
    outcome = "forbidden"


class NotFound(AdminRefusal):
    status = 404
    problem = "not-found"
    title = "Not found"
    outcome = "not_found"


class Conflict(AdminRefusal):
    status = 409
    problem = "conflict"
    title = "Conflict"
    outcome = "conflict"


class RateLimited(AdminRefusal):
    status = 429
    problem = "rate-limited"
    title = "Too many requests"
    outcome = "rate_limited"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(AdminRefusal):
    status = 503
    problem = "unavailable"
    title = "Temporarily unavailable"
    outcome = "unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


# --- authentication, rate limit, metric ----------------------------------------------------
def admin_from_bearer(parts: Components, authorization: str | None, ip: str | None) -> Admin:
    """The admin a bearer access token stands for (RFC 6750 §2.1 header). The token must
    be active (signature, expiry, not revoked: `validate_access_token`), carry `admin`,
    be the client's own (no user session, no delegation) for the admin API's audience,
    and its client must still have the admin right: taking the right away takes effect
    at the next call."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(
            "Send an access token: 'Authorization: Bearer <token>' (client_credentials "
            "with scope 'admin', as a client with the admin right).",
            error=None,
        )
    try:
        claims = validate_access_token(parts.keys, parts.store, parts.issuer, parts.now(), token)
    except InactiveToken as exc:
        log.info("admin API: token refused (%s)", exc.reason)
        raise Unauthenticated("The access token is expired, revoked or invalid.") from None
    if ADMIN_SCOPE not in str(claims.get("scope") or "").split():
        raise InsufficientScope(
            "This access token does not carry the 'admin' scope. An admin client asks for "
            "it with grant_type=client_credentials and scope=admin."
        )
    client_id = claims.get("client_id")
    own = (
        isinstance(client_id, str)
        and claims.get("sub") == client_id
        and "sid" not in claims
        and "act" not in claims
    )
    if not own or claims.get("aud") != admin_audience(parts.issuer):
        raise Unauthenticated("The access token was not issued for the admin API.")
    assert isinstance(client_id, str)
    record = parts.store.get_client(client_id)
    if record is None or not registry.is_admin_client(record):
        raise Forbidden(f"Client {client_id!r} does not have the admin right.")
    return Admin(kind="client", name=client_id, ip=ip)


def admin_from_session(parts: Components, session: SessionRecord, ip: str | None) -> Admin:
    """The admin a live browser session stands for (the admin page): the person's
    ShotGrid permission group must be one of `BROKER_ADMIN_PERMISSION_GROUPS`, as ShotGrid
    said within the re-check period (`broker.admin_access`). ShotGrid unreachable when
    it must be asked: 503, never a stale yes."""
    try:
        verdict = parts.admin_access.check(session)
    except UpstreamUnavailable as exc:
        log.warning("admin page: cannot read the permission group (%s)", type(exc).__name__)
        raise Unavailable(
            "ShotGrid is not reachable to confirm your permission group. Try again shortly "
            "(the admin API works without ShotGrid)."
        ) from None
    if not verdict.allowed:
        shown = f" ({verdict.permission_group})" if verdict.permission_group else ""
        raise Forbidden(
            f"Your ShotGrid permission group{shown} may not administer the token broker. "
            "Ask a ShotGrid administrator; after a change, sign out and in again."
        )
    return Admin(kind="user", name=session.login, ip=ip, user_id=session.user_id, sid=session.sid)


def take_slot(parts: Components, key: str) -> None:
    """One admin call against `BROKER_ADMIN_RATE_LIMIT` per minute (a store counter, so
    every process and replica counts together)."""
    counter, now, limit = f"admin:{key}", parts.now(), parts.settings.admin_rate_limit
    if parts.store.reserve(counter, now, RATE_WINDOW, limit) is None:
        window = parts.store.read_counter(counter, now, RATE_WINDOW)
        left = (window.started + RATE_WINDOW - now) if window else RATE_WINDOW
        raise RateLimited(
            f"More than {limit} admin calls in a minute; wait and try again.",
            retry_after=max(1, math.ceil(left.total_seconds())),
        )


def perform(
    parts: Components,
    action: str,
    authenticate: Callable[[], Admin],
    run: Callable[[Admin], T],
    *,
    ip: str | None,
) -> T:
    """One admin call, start to end: the per-address rate limit, who acts, the per-admin
    rate limit, the action; the outcome counted in `broker_admin_actions_total`. Store
    failures become `Unavailable` (503), never a 500."""
    outcome = "success"
    try:
        take_slot(parts, f"ip:{ip or '-'}")
        admin = authenticate()
        take_slot(parts, admin.actor)
        return run(admin)
    except AdminRefusal as exc:
        outcome = exc.outcome
        raise
    except StoreError as exc:
        outcome = "unavailable"
        metrics.store_error("admin")
        log.warning("admin API: store unavailable (%s)", exc.__class__.__name__)
        raise Unavailable(
            "The token store is not reachable right now. Try again shortly (a listing shows "
            "what a change interrupted by the outage did)."
        ) from None
    finally:
        metrics.admin_action(action, outcome)


@contextlib.contextmanager
def acting(admin: Admin, action: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """Audit a change as an `admin` event naming the admin, whatever its outcome; the
    body may add identifiers to the dict it gets."""
    details: dict[str, Any] = dict(fields)
    outcome = "success"
    try:
        yield details
    except AdminRefusal as exc:
        outcome = exc.outcome
        raise
    except StoreError:
        outcome = "unavailable"
        raise
    except BaseException:
        outcome = "error"
        raise
    finally:
        audit("admin", outcome=outcome, action=action, admin=admin.actor, ip=admin.ip, **details)


# --- people and their sessions --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SessionView:
    """A live session as the admin API shows it."""

    session: SessionRecord
    clients: tuple[str, ...]
    """The clients signed into under it (its refresh families'), first use first."""
    last_used_at: datetime
    """The newest refresh token issued under it, else its sign-in."""


def _check_login(login: str) -> str:
    if not login or len(login) > MAX_LOGIN or not login.isprintable():
        raise AdminRefusal(
            f"A ShotGrid login is 1-{MAX_LOGIN} printable characters.", field="login"
        )
    return login


def _require_known_user(parts: Components, login: str) -> None:
    """404 when ShotGrid has no such login. ShotGrid unreachable (or no script key): the
    broker cannot tell, and answers from what it holds."""
    try:
        parts.upstream.permission_group(login)
    except UnknownUser:
        raise NotFound(f"ShotGrid has no user with the login {login!r}.") from None
    except UpstreamError as exc:
        log.warning("admin API: cannot check the login in ShotGrid (%s)", type(exc).__name__)


def _session_view(parts: Components, session: SessionRecord) -> SessionView:
    families = parts.store.list_families(session.sid)
    activity = parts.store.refresh_activity([f.family_id for f in families])
    return SessionView(
        session=session,
        clients=tuple(dict.fromkeys(f.client_id for f in families)),
        last_used_at=max([session.auth_time, *activity.values()]),
    )


def user_sessions(parts: Components, admin: Admin, login: str) -> list[SessionView]:
    """The person's live sessions, newest first: 404 only for a login ShotGrid does not
    know (a known person with no session has an empty list)."""
    sessions = parts.store.list_login_sessions(_check_login(login), parts.now())
    if not sessions:
        _require_known_user(parts, login)
    return [_session_view(parts, s) for s in sessions]


def session_view(parts: Components, admin: Admin, sid: str) -> SessionView:
    """One live session (what the page asks an administrator to confirm ending)."""
    session = parts.store.get_session(sid) if len(sid) <= MAX_ID else None
    if session is None or not parts.sessions.live(session):
        raise NotFound("No live session has this sid.")
    return _session_view(parts, session)


def require_user(parts: Components, admin: Admin, login: str) -> None:
    """404 for a login ShotGrid does not know (as the actions on a person check)."""
    _require_known_user(parts, _check_login(login))


def end_session(parts: Components, admin: Admin, sid: str) -> SessionRecord:
    """End one session and every refresh family under it: its refresh tokens then get
    `invalid_grant`, its access tokens are inactive at introspection and userinfo."""
    with acting(admin, "session_end", sid=sid[:MAX_ID]) as details:
        session = parts.store.get_session(sid) if len(sid) <= MAX_ID else None
        if session is None or not parts.sessions.live(session):
            raise NotFound("No live session has this sid.")
        details.update(login=session.login, user_id=session.user_id)
        if not parts.sessions.end_session(sid, END_REASON):
            raise NotFound("No live session has this sid.")  # ended meanwhile
        return session


def end_user_sessions(parts: Components, admin: Admin, login: str) -> list[str]:
    """End every live session of a person (a stolen laptop); returns their sids."""
    with acting(admin, "sessions_end_all", login=login[:MAX_LOGIN]) as details:
        sessions = parts.store.list_login_sessions(_check_login(login), parts.now())
        if not sessions:
            _require_known_user(parts, login)
        ended = [s.sid for s in sessions if parts.sessions.end_session(s.sid, END_REASON)]
        details["count"] = len(ended)
        return ended


def unlock_user(parts: Components, admin: Admin, login: str) -> None:
    """Clear the person's failed-login counts (from every address), so their next sign-in
    is judged afresh; the addresses' own counts stay (`LoginThrottle.unlock`)."""
    with acting(admin, "user_unlock", login=login[:MAX_LOGIN]) as details:
        _require_known_user(parts, _check_login(login))
        details["counters"] = parts.throttle.unlock(login)


# --- clients ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NewClient:
    """A registration as the API received it; checked by `broker.admin.add_client`."""

    client_id: str
    confidential: bool = False
    name: str = ""
    grant_types: tuple[str, ...] = ()
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    may_introspect: bool = False
    may_exchange_shotgrid: bool = False
    max_exchange_lifetime: int | None = None
    admin: bool = False


@dataclass(frozen=True, slots=True)
class ClientChanges:
    """The fields a change names (None: kept); checked by `broker.admin.update_client`."""

    grant_types: tuple[str, ...] | None = None
    scopes: tuple[str, ...] | None = None
    audiences: tuple[str, ...] | None = None
    may_introspect: bool | None = None
    may_exchange_shotgrid: bool | None = None
    max_exchange_lifetime: int | None = None
    """0 clears it (an exchanged token then never outlives its subject)."""
    admin: bool | None = None
    named: tuple[str, ...] = field(default=())
    """The fields the request named, for the audit line."""


def _refusal(exc: registry.AdminError | ClientPolicyError) -> AdminRefusal:
    """The shared implementation's refusal as the API answers it: a broken registration
    rule names its field and its RFC 7591 §3.2.2 error code."""
    if isinstance(exc, ClientPolicyError):
        return AdminRefusal(exc.message, field=exc.field, error=exc.error)
    if isinstance(exc, registry.UnknownClient):
        return NotFound(str(exc))
    if isinstance(exc, registry.ClientExists | registry.LastAdminClient | registry.AdminBusy):
        return Conflict(str(exc))
    return AdminRefusal(str(exc))


def list_clients(parts: Components, admin: Admin) -> list[ClientRecord]:
    return parts.store.list_clients()


def get_client(parts: Components, admin: Admin, client_id: str) -> ClientRecord:
    record = parts.store.get_client(client_id) if len(client_id) <= MAX_ID else None
    if record is None:
        raise NotFound(f"No client has the id {client_id!r}.")
    return record


def create_client(
    parts: Components, admin: Admin, new: NewClient
) -> tuple[ClientRecord, str | None]:
    """Register a client; a confidential one's secret is returned here, once."""
    with acting(admin, "client_create", client_id=new.client_id[:MAX_ID]):
        try:
            return registry.add_client(
                parts.store,
                registry.limits_of(parts.settings),
                new.client_id,
                confidential=new.confidential,
                grants=new.grant_types,
                redirect_uris=new.redirect_uris,
                post_logout_redirect_uris=new.post_logout_redirect_uris,
                origins=new.allowed_origins,
                scopes=new.scopes,
                audiences=new.audiences,
                may_introspect=new.may_introspect,
                may_exchange_shotgrid=new.may_exchange_shotgrid,
                max_exchange_lifetime=new.max_exchange_lifetime,
                name=new.name,
                admin=new.admin,
            )
        except (registry.AdminError, ClientPolicyError) as exc:
            raise _refusal(exc) from None


def change_client(
    parts: Components, admin: Admin, client_id: str, changes: ClientChanges
) -> ClientRecord:
    """Change a client's policy (never its secret); the last admin client keeps its
    right (409)."""
    with acting(
        admin, "client_update", client_id=client_id[:MAX_ID], changed=",".join(changes.named)
    ):
        if len(client_id) > MAX_ID:
            raise NotFound(f"No client has the id {client_id!r}.")
        try:
            return registry.update_client(
                parts.store,
                registry.limits_of(parts.settings),
                client_id,
                grants=changes.grant_types,
                scopes=changes.scopes,
                audiences=changes.audiences,
                may_introspect=changes.may_introspect,
                may_exchange_shotgrid=changes.may_exchange_shotgrid,
                max_exchange_lifetime=changes.max_exchange_lifetime,
                admin=changes.admin,
                keep_an_admin=True,
            )
        except (registry.AdminError, ClientPolicyError) as exc:
            raise _refusal(exc) from None


def delete_client(parts: Components, admin: Admin, client_id: str) -> None:
    """Remove a client, never the last one with the admin right (409)."""
    with acting(admin, "client_delete", client_id=client_id[:MAX_ID]):
        if len(client_id) > MAX_ID:
            raise NotFound(f"No client has the id {client_id!r}.")
        try:
            registry.remove_client(parts.store, client_id, keep_an_admin=True)
        except (registry.AdminError, ClientPolicyError) as exc:
            raise _refusal(exc) from None


# --- signing keys -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rotation:
    rotated: tuple[tuple[str, str, str], ...]
    """Per algorithm: (alg, the key now signing, the next key now published)."""
    warnings: tuple[str, ...]


def _keys(parts: Components) -> registry.Admin:
    return registry.Admin(parts.settings, parts.store, parts.keys)


def list_keys(parts: Components, admin: Admin) -> list[KeyRecord]:
    return registry.signing_keys(_keys(parts))


def rotate_keys(parts: Components, admin: Admin) -> Rotation:
    """Rotate now (a suspected leak): every algorithm's next key starts signing."""
    with acting(admin, "keys_rotate") as details:
        try:
            rotated, warnings = registry.rotate_keys(_keys(parts))
        except registry.AdminError as exc:
            raise Conflict(str(exc)) from None
        details["kid"] = ",".join(current for current, _next in rotated)
        algs = parts.keys.algs
        return Rotation(
            tuple((alg, cur, nxt) for alg, (cur, nxt) in zip(algs, rotated, strict=True)),
            tuple(warnings),
        )


# --- the audit trail ---------------------------------------------------------------------------
def audit_events(
    parts: Components,
    admin: Admin,
    *,
    login: str | None = None,
    event: str | None = None,
    limit: int = 100,
) -> list[AuditRecord]:
    """Recent kept audit events, newest first. This process's queue is written first, so
    what it just did is there; other workers' events follow within a flush interval."""
    if not 1 <= limit <= AUDIT_LIMIT_MAX:
        raise AdminRefusal(f"limit is 1 to {AUDIT_LIMIT_MAX}.", field="limit")
    parts.audit_trail.flush()
    return parts.store.list_audit_events(
        parts.now(),
        login=login.strip().lower() if login else None,
        event=event or None,
        limit=limit,
    )
