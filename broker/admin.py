"""Operator actions behind `token-broker keys` and `token-broker clients`: plain functions
over the store, so the CLI only parses arguments."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

from broker.clock import system_clock
from broker.components import key_manager, sealer_for
from broker.grants.registry import CONFIDENTIAL_ONLY, GRANT_TYPES
from broker.settings import Settings
from broker.store import ClientRecord, Store, open_store
from broker.tokens.keys import KeyManager, KeyRefused
from broker.tokens.secrets import hash_client_secret

KNOWN_GRANTS = GRANT_TYPES


class AdminError(Exception):
    """An operator mistake, shown as one line."""


@dataclass(frozen=True, slots=True)
class Admin:
    """What the key and client commands work on: the store and its keys (never ShotGrid)."""

    settings: Settings
    store: Store
    keys: KeyManager


def open_admin(settings: Settings) -> Admin:
    problems = [p for p in settings.production_problems() if "STORE_URL" in p or "SECRET_KEY" in p]
    if problems:
        raise AdminError("; ".join(problems))
    assert settings.store_url is not None
    store = open_store(settings.store_url)
    keys = key_manager(settings, store, sealer_for(settings), system_clock)
    return Admin(settings, store, keys)


def key_rows(admin: Admin) -> list[tuple[str, str, str, str]]:
    return [
        (r.kid, r.alg, r.state.value, r.created_at.isoformat(timespec="seconds"))
        for r in admin.keys.records()
        if r.use == "sig"
    ]


def rotate_keys(admin: Admin) -> tuple[list[tuple[str, str]], list[str]]:
    """Rotate every algorithm; also return warnings for next keys promoted before they
    were published for a whole JWKS cache period (validators holding a cached JWKS may
    then refuse new tokens until they refetch, which well-behaved ones do on a new kid)."""
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


def retire_key(admin: Admin, kid: str) -> None:
    try:
        admin.keys.retire(kid)
    except KeyRefused as exc:
        raise AdminError(str(exc)) from None


def add_client(
    store: Store,
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
    name: str = "",
    replace_existing: bool = False,
) -> tuple[ClientRecord, str | None]:
    """Register a client. Returns the record and, for a confidential client, its secret:
    generated here and shown once, never stored in clear nor taken from the command line
    (where `ps` and shell history would keep it)."""
    if not client_id or len(client_id) > 200 or not client_id.isprintable() or " " in client_id:
        raise AdminError("client id must be 1-200 printable characters without spaces")
    unknown = [g for g in grants if g not in KNOWN_GRANTS]
    if unknown:
        raise AdminError(f"unknown grant type {unknown[0]!r}; known: {', '.join(KNOWN_GRANTS)}")
    if not grants:
        raise AdminError("give at least one --grant")
    if not confidential and any(g in CONFIDENTIAL_ONLY for g in grants):
        raise AdminError("client_credentials and token exchange need a confidential client")
    if "authorization_code" in grants and not redirect_uris:
        raise AdminError("authorization_code needs at least one --redirect-uri")
    if store.get_client(client_id) is not None and not replace_existing:
        raise AdminError(f"client {client_id!r} already exists (use --replace)")
    secret = secrets.token_urlsafe(32) if confidential else None
    record = ClientRecord(
        client_id=client_id,
        name=name,
        public=not confidential,
        secret_hash=hash_client_secret(secret) if secret else None,
        grant_types=tuple(grants),
        redirect_uris=tuple(redirect_uris),
        post_logout_redirect_uris=tuple(post_logout_redirect_uris),
        allowed_origins=tuple(origins),
        audiences=tuple(audiences),
        may_introspect=may_introspect,
        may_exchange_shotgrid=may_exchange_shotgrid,
        max_exchange_lifetime=max_exchange_lifetime,
    )
    if scopes:
        record = replace(record, scopes=tuple(scopes))
    store.put_client(record)
    return record, secret


def update_client(
    store: Store,
    client_id: str,
    *,
    grants: Sequence[str] | None = None,
    scopes: Sequence[str] | None = None,
    audiences: Sequence[str] | None = None,
    may_introspect: bool | None = None,
    may_exchange_shotgrid: bool | None = None,
    max_exchange_lifetime: int | None = None,
) -> ClientRecord:
    """Change a client's policy in place; what is not given keeps its value, and the
    secret is never touched (rotate it with `add --replace`)."""
    record = store.get_client(client_id)
    if record is None:
        raise AdminError(f"no client {client_id!r}")
    if grants is not None:
        unknown = [g for g in grants if g not in KNOWN_GRANTS]
        if unknown:
            raise AdminError(f"unknown grant type {unknown[0]!r}; known: {', '.join(KNOWN_GRANTS)}")
        if not grants:
            raise AdminError("give at least one --grant")
        record = replace(record, grant_types=tuple(grants))
    if record.public and any(g in CONFIDENTIAL_ONLY for g in record.grant_types):
        raise AdminError("client_credentials and token exchange need a confidential client")
    if record.public and may_introspect:
        raise AdminError("only confidential clients may introspect")
    if max_exchange_lifetime is not None and max_exchange_lifetime < 0:
        raise AdminError("--max-exchange-lifetime must be 0 or more seconds")
    changes: dict[str, object] = {}
    if scopes is not None:
        changes["scopes"] = tuple(scopes)
    if audiences is not None:
        changes["audiences"] = tuple(audiences)
    if may_introspect is not None:
        changes["may_introspect"] = may_introspect
    if may_exchange_shotgrid is not None:
        changes["may_exchange_shotgrid"] = may_exchange_shotgrid
    if max_exchange_lifetime is not None:
        changes["max_exchange_lifetime"] = max_exchange_lifetime or None
    record = replace(record, **changes)  # type: ignore[arg-type]
    store.put_client(record)
    return record


def policy_line(record: ClientRecord) -> str:
    """The token-exchange policy of a client, as `clients update` prints it."""
    lifetime = record.max_exchange_lifetime
    return (
        f"{record.client_id}: grants={','.join(record.grant_types) or '-'} "
        f"audiences={','.join(record.audiences) or '-'} "
        f"shotgrid_exchange={'yes' if record.may_exchange_shotgrid else 'no'} "
        f"introspect={'yes' if record.may_introspect else 'no'} "
        f"max_exchange_lifetime={lifetime if lifetime else 'subject'}"
    )


def remove_client(store: Store, client_id: str) -> None:
    if not store.delete_client(client_id):
        raise AdminError(f"no client {client_id!r}")
