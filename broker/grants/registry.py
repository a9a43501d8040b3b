"""Every grant the token endpoint serves, one line each. Discovery's
`grant_types_supported`, the request metrics' labels, the client registry's checks and the
route/spec test all read this list: adding a grant is its module plus one line here
(docs/adding-a-grant.md)."""

from __future__ import annotations

from broker.grants import (
    GrantSpec,
    authorization_code,
    client_credentials,
    device_code,
    password,
    refresh_token,
    token_exchange,
)

GRANTS: tuple[GrantSpec, ...] = (
    authorization_code.SPEC,
    password.SPEC,
    refresh_token.SPEC,
    client_credentials.SPEC,
    token_exchange.SPEC,
    device_code.SPEC,
)

GRANT_TYPES: tuple[str, ...] = tuple(spec.grant_type for spec in GRANTS)

CONFIDENTIAL_ONLY: frozenset[str] = frozenset(
    spec.grant_type for spec in GRANTS if spec.confidential_only
)


def auth_methods() -> list[str]:
    """Every client authentication method some grant accepts, in a stable order."""
    seen: dict[str, None] = {}
    for spec in GRANTS:
        seen.update(dict.fromkeys(spec.auth_methods))
    order = ("client_secret_basic", "client_secret_post", "none")
    return [m for m in order if m in seen] + sorted(m for m in seen if m not in order)
