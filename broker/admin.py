"""Operator actions behind `token-broker keys` and `token-broker clients`: plain functions
over the store, so the CLI only parses arguments, and the admin API
(`broker.admin_actions`) calls the very same ones.

Client registrations go through `broker.client_policy` (its `ClientPolicyError` names the
field); other refusals are `AdminError`, one line each, with subclasses for what an API
answers differently: `UnknownClient`, `ClientExists`, `LastAdminClient`, `AdminBusy`.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from broker.client_policy import ClientPolicyError, Limits, check_client
from broker.clock import Clock, system_clock
from broker.components import key_manager, sealer_for
from broker.grants import ADMIN_SCOPE
from broker.preflight import store_url_problems
from broker.settings import Settings, env_name
from broker.store import ClientRecord, KeyRecord, KeyState, Store, open_store
from broker.tokens.keys import KeyManager, KeyRefused
from broker.tokens.secrets import hash_client_secret


class AdminError(Exception):
    """An operator mistake, shown as one line."""


class UnknownClient(AdminError):
    """No client has that id."""


class ClientExists(AdminError):
    """A client with that id is already registered."""


class LastAdminClient(AdminError):
    """The change would leave no client able to use the admin API."""


class AdminBusy(AdminError):
    """Another change to the admin clients is under way; try again."""


ADMIN_LEASE = "admin-clients"
ADMIN_LEASE_TTL = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class Admin:
    """What the key and client commands work on: the store and its keys (never ShotGrid)."""

    settings: Settings
    store: Store
    keys: KeyManager


def admin_problems(settings: Settings, *, read_only: bool = False) -> list[str]:
    """What `keys` and `clients` need: a store they may open and the key-encryption key.
    `read_only` commands refuse a SQLite file that does not exist rather than create an
    empty store and report that it holds nothing."""
    problems = [
        f"{env_name(name)} is required (or --data-dir DIR for a demo's data dir)"
        for name in ("store_url", "secret_key")
        if getattr(settings, name) is None
    ]
    return problems + store_url_problems(settings.store_url, must_exist=read_only)


def open_admin(settings: Settings, *, clock: Clock = system_clock) -> Admin:
    """The store and its keys, for settings that passed `admin_problems`."""
    problems = admin_problems(settings)
    if problems:
        raise AdminError("; ".join(problems))
    assert settings.store_url is not None
    store = open_store(settings.store_url)
    return Admin(settings, store, key_manager(settings, store, sealer_for(settings), clock))


def limits_of(settings: Settings) -> Limits:
    return Limits(audiences=tuple(settings.audiences))


# --- signing keys -------------------------------------------------------------------------------
def signing_keys(admin: Admin) -> list[KeyRecord]:
    """The published signing keys (never the refresh-token MAC key), oldest first."""
    return [r for r in admin.keys.records() if r.use == "sig"]


def key_rows(admin: Admin) -> list[tuple[str, str, str, str]]:
    return [
        (r.kid, r.alg, r.state.value, r.created_at.isoformat(timespec="seconds"))
        for r in signing_keys(admin)
    ]


def rotate_keys(admin: Admin) -> tuple[list[tuple[str, str]], list[str]]:
    """Rotate every algorithm; also return warnings for next keys promoted before they
    were published for a whole JWKS cache period (validators holding a cached JWKS may
    then refuse new tokens until they refetch, which well-behaved ones do on a new kid).
    Without a published next key the key manager publishes one and refuses (AdminError):
    a key made on the spot never signs."""
    keys = admin.keys
    keys.ensure_keys()
    lead = int(keys.publish_lead.total_seconds())
    warnings = [
        f"next key {kid} was published {age} s ago, less than the JWKS cache period ({lead} s)"
        for kid, age in keys.young_next_keys()
    ]
    try:
        return [keys.rotate(alg) for alg in keys.algs], warnings
    except KeyRefused as exc:
        raise AdminError(str(exc)) from None


def retire_key(admin: Admin, kid: str) -> str | None:
    """Retire a key that does not sign. Retiring the *next* key publishes a new next key
    in its place (the key manager's rule); returns that replacement's kid, if any."""
    before = {r.kid for r in admin.keys.records() if r.state is KeyState.NEXT}
    try:
        admin.keys.retire(kid)
    except KeyRefused as exc:
        raise AdminError(str(exc)) from None
    after = [r.kid for r in admin.keys.records() if r.state is KeyState.NEXT and r.use == "sig"]
    return next((k for k in after if k not in before), None)


# --- clients --------------------------------------------------------------------------------------
def add_client(
    store: Store,
    limits: Limits,
    client_id: str,
    *,
    confidential: bool,
    grants: Sequence[str],
    redirect_uris: Sequence[str] = (),
    post_logout_redirect_uris: Sequence[str] = (),
    origins: Sequence[str] = (),
    scopes: Sequence[str] = (),
    audiences: Sequence[str] = (),
    may_introspect: bool = False,
    may_exchange_shotgrid: bool = False,
    max_exchange_lifetime: int | None = None,
    backchannel_logout_uri: str | None = None,
    name: str = "",
    replace_existing: bool = False,
    admin: bool = False,
) -> tuple[ClientRecord, str | None]:
    """Register a client. Returns the record and, for a confidential client, its secret:
    generated here and shown once, never stored in clear nor taken from the command line
    (where `ps` and shell history would keep it). `admin` gives it the admin right."""
    record = ClientRecord(
        client_id=client_id,
        name=name,
        public=not confidential,
        grant_types=tuple(dict.fromkeys(grants)),
        redirect_uris=tuple(dict.fromkeys(redirect_uris)),
        post_logout_redirect_uris=tuple(dict.fromkeys(post_logout_redirect_uris)),
        allowed_origins=tuple(dict.fromkeys(origins)),
        audiences=tuple(dict.fromkeys(audiences)),
        may_introspect=may_introspect,
        may_exchange_shotgrid=may_exchange_shotgrid,
        max_exchange_lifetime=max_exchange_lifetime or None,
        backchannel_logout_uri=backchannel_logout_uri,
    )
    _no_admin_in(scopes)
    if scopes:
        record = replace(record, scopes=tuple(dict.fromkeys(scopes)))
    if admin:
        record = replace(record, scopes=with_admin(record.scopes, True))
    check_client(record, limits)
    if store.get_client(client_id) is not None and not replace_existing:
        raise ClientExists(f"client {client_id!r} already exists (use --replace)")
    secret = secrets.token_urlsafe(32) if confidential else None
    record = replace(record, secret_hash=hash_client_secret(secret) if secret else None)
    store.put_client(record)
    return record, secret


def update_client(
    store: Store,
    limits: Limits,
    client_id: str,
    *,
    grants: Sequence[str] | None = None,
    scopes: Sequence[str] | None = None,
    audiences: Sequence[str] | None = None,
    may_introspect: bool | None = None,
    may_exchange_shotgrid: bool | None = None,
    max_exchange_lifetime: int | None = None,
    admin: bool | None = None,
    keep_an_admin: bool = False,
    backchannel_logout_uri: str | None = None,
    no_backchannel_logout_uri: bool = False,
) -> ClientRecord:
    """Change a client's policy in place; what is not given keeps its value, and the
    secret is never touched (rotate it with `add --replace`). The changed fields are
    checked as `add` checks them, and the rules between fields on the whole result.
    `admin` gives or takes the admin right (a `scopes` list keeps it as it is); with
    `keep_an_admin` (the admin API) a change that would leave no admin client is refused
    (`LastAdminClient`)."""
    with _admin_clients_guard(store, keep_an_admin):
        record = store.get_client(client_id)
        if record is None:
            raise UnknownClient(f"no client {client_id!r}")
        updated = _changed(
            record,
            limits,
            grants=grants,
            scopes=scopes,
            audiences=audiences,
            may_introspect=may_introspect,
            may_exchange_shotgrid=may_exchange_shotgrid,
            max_exchange_lifetime=max_exchange_lifetime,
            admin=admin,
            backchannel_logout_uri=backchannel_logout_uri,
            no_backchannel_logout_uri=no_backchannel_logout_uri,
        )
        if keep_an_admin and is_admin_client(record) and not is_admin_client(updated):
            _refuse_last_admin(store, client_id)
        store.put_client(updated)
        return updated


def _changed(
    record: ClientRecord,
    limits: Limits,
    *,
    grants: Sequence[str] | None,
    scopes: Sequence[str] | None,
    audiences: Sequence[str] | None,
    may_introspect: bool | None,
    may_exchange_shotgrid: bool | None,
    max_exchange_lifetime: int | None,
    admin: bool | None,
    backchannel_logout_uri: str | None = None,
    no_backchannel_logout_uri: bool = False,
) -> ClientRecord:
    changes: dict[str, object] = {}
    if grants is not None:
        changes["grant_types"] = tuple(dict.fromkeys(grants))
    if scopes is not None:
        _no_admin_in(scopes)
        changes["scopes"] = with_admin(tuple(dict.fromkeys(scopes)), ADMIN_SCOPE in record.scopes)
    if audiences is not None:
        changes["audiences"] = tuple(dict.fromkeys(audiences))
    if may_introspect is not None:
        changes["may_introspect"] = may_introspect
    if may_exchange_shotgrid is not None:
        changes["may_exchange_shotgrid"] = may_exchange_shotgrid
    if max_exchange_lifetime is not None:
        changes["max_exchange_lifetime"] = max_exchange_lifetime
    if admin is not None:
        current = changes.get("scopes", record.scopes)
        assert isinstance(current, tuple)
        changes["scopes"] = with_admin(current, admin)
    if backchannel_logout_uri is not None:
        changes["backchannel_logout_uri"] = backchannel_logout_uri
    if no_backchannel_logout_uri:
        changes["backchannel_logout_uri"] = None
    updated = replace(record, **changes)  # type: ignore[arg-type]
    check_client(updated, limits, changed=changes)
    if max_exchange_lifetime is not None:
        updated = replace(updated, max_exchange_lifetime=max_exchange_lifetime or None)
    return updated


def policy_line(record: ClientRecord) -> str:
    """The token-exchange policy of a client, as `clients update` prints it."""
    lifetime = record.max_exchange_lifetime
    return (
        f"{record.client_id}: grants={','.join(record.grant_types) or '-'} "
        f"audiences={','.join(record.audiences) or '-'} "
        f"shotgrid_exchange={'yes' if record.may_exchange_shotgrid else 'no'} "
        f"introspect={'yes' if record.may_introspect else 'no'} "
        f"max_exchange_lifetime={lifetime if lifetime else 'subject'} "
        f"admin={'yes' if is_admin_client(record) else 'no'} "
        f"backchannel_logout_uri={record.backchannel_logout_uri or '-'}"
    )


def remove_client(store: Store, client_id: str, *, keep_an_admin: bool = False) -> None:
    """Remove a client; with `keep_an_admin` (the admin API) not the last admin client.
    The command line may remove it: it is the way back in, and can add one again."""
    with _admin_clients_guard(store, keep_an_admin):
        if keep_an_admin:
            record = store.get_client(client_id)
            if record is not None and is_admin_client(record):
                _refuse_last_admin(store, client_id)
        if not store.delete_client(client_id):
            raise UnknownClient(f"no client {client_id!r}")


# --- the admin right ----------------------------------------------------------------------
def is_admin_client(record: ClientRecord) -> bool:
    """Whether the client can obtain an admin token (its own, by client_credentials)."""
    return (
        ADMIN_SCOPE in record.scopes
        and not record.public
        and "client_credentials" in record.grant_types
    )


def with_admin(scopes: Sequence[str], admin: bool) -> tuple[str, ...]:
    kept = tuple(s for s in scopes if s != ADMIN_SCOPE)
    return (*kept, ADMIN_SCOPE) if admin else kept


def _no_admin_in(scopes: Sequence[str]) -> None:
    """The right is given and taken by itself (`--admin`), so that replacing a client's
    scope list never gives or drops it by the way."""
    if ADMIN_SCOPE in scopes:
        raise ClientPolicyError(
            "scopes",
            "'admin' is a right, not a scope to list: give it with --admin "
            '(`"admin": true` in the admin API)',
        )


def _refuse_last_admin(store: Store, client_id: str) -> None:
    others = [c for c in store.list_clients() if c.client_id != client_id and is_admin_client(c)]
    if not others:
        raise LastAdminClient(
            f"{client_id!r} is the last client with the admin right; give another client "
            "the right first (or use the command line)"
        )


@contextlib.contextmanager
def _admin_clients_guard(store: Store, active: bool) -> Iterator[None]:
    """Serialise changes that could remove the last admin client (across processes and
    replicas, by a store lease), so two concurrent removals of the last two cannot both
    see the other one remaining."""
    if not active:
        yield
        return
    owner = secrets.token_hex(8)
    if not store.try_lease(ADMIN_LEASE, owner, system_clock(), ADMIN_LEASE_TTL):
        raise AdminBusy("another change to the admin clients is under way; try again")
    try:
        yield
    finally:
        store.release_lease(ADMIN_LEASE, owner)
