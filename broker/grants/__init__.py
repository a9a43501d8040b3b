"""One module per grant type, each the same shape: an Authlib grant class (Authlib keeps
dispatching, client authentication, request parsing and its error classes) and a `SPEC`
that declares it; `broker/grants/registry.py` lists the specs, and discovery, the metric
labels, client administration and the route/spec test all read that list. Grants keep the
state they pass from `validate_token_request` to `create_token_response` in typed instance
attributes (Authlib makes one grant object per request). Each maps upstream and store
failures to RFC 6749 errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import InvalidScopeError

#: Token responses are never cached (RFC 6749 §5.1).
TOKEN_HEADERS = [
    ("Content-Type", "application/json"),
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
]

DEFAULT_SCOPE = "profile email"

ADMIN_SCOPE = "admin"
"""The admin API's scope. Only a client's own token (client_credentials) may carry it, and
only for a client given the right (`clients add/update --admin`, which puts it among the
client's scopes); a grant for a person never does (`user_scopes`)."""


def admin_audience(issuer: str) -> str:
    """The `aud` of every token carrying `admin`: the admin API itself (RFC 8707 resource),
    so an admin token is good for nothing else and no other token passes there."""
    return f"{issuer}/admin/api"


def user_scopes(allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The scopes a grant for a person may give out of a client's allowed scopes."""
    return tuple(s for s in allowed if s != ADMIN_SCOPE)


@dataclass(frozen=True, slots=True)
class GrantSpec:
    """What the rest of the broker needs to know of a grant, next to the grant itself."""

    handler: type[Any]
    """The Authlib grant class; its `GRANT_TYPE` and `TOKEN_ENDPOINT_AUTH_METHODS` are the
    grant type and the client authentication methods it accepts."""
    parameters: tuple[str, ...]
    """The form parameters it reads at the token endpoint besides `grant_type`, `scope`
    and client authentication (openapi.yaml must document each)."""
    confidential_only: bool = False
    """Only clients with a secret may be registered for it."""
    metadata: tuple[tuple[str, str], ...] = ()
    """Discovery fields it adds, as (name, path relative to the issuer)."""
    endpoints: tuple[tuple[str, type[Any]], ...] = ()
    """Other endpoints the grant needs, as (path, Authlib endpoint class): the server
    registers each class and the HTTP layer routes `POST <path>` to it (e.g. the device
    authorization endpoint of RFC 8628)."""

    @property
    def grant_type(self) -> str:
        grant_type: str = self.handler.GRANT_TYPE
        return grant_type

    @property
    def auth_methods(self) -> tuple[str, ...]:
        return tuple(self.handler.TOKEN_ENDPOINT_AUTH_METHODS)


def resolve_scope(requested: str | None, allowed: tuple[str, ...], default: str) -> str:
    """The granted scope: the request's (all of it must be allowed), else the default
    narrowed to what the client may have. Order is kept; duplicates dropped."""
    if requested is None or not requested.strip():
        return " ".join(s for s in default.split() if s in allowed)
    wanted = list(dict.fromkeys(requested.split()))
    if any(s not in allowed for s in wanted):
        raise InvalidScopeError()
    return " ".join(wanted)


def resolve_audience(form: Any, allowed: tuple[str, ...], default: str | None) -> str:
    """The one audience a token may be issued for: `audience` (RFC 8693 §2.1) or
    `resource` (RFC 8707 §2), which must agree when both are given and be among the
    audiences the client may request; `default` when neither is sent (None: a target is
    required). Anything else is `invalid_target`."""
    from broker.errors import InvalidTargetError

    targets: set[str] = {v for v in (form.get("audience"), form.get("resource")) if v}
    if not targets:
        if default is None:
            raise InvalidTargetError("Name the target with 'audience' or 'resource'.")
        return default
    if len(targets) > 1:
        raise InvalidTargetError("'audience' and 'resource' name different targets.")
    (target,) = targets
    if target not in allowed:
        raise InvalidTargetError("This client may not obtain tokens for that audience.")
    return target
