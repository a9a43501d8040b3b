"""What a client registration may say: the rules `clients add` and `clients update` (and,
later, the admin API) apply to a `ClientRecord` before it reaches the store.

Every rule raises `ClientPolicyError`, which names the record field at fault and carries
the RFC 7591 §3.2.2 error code (`invalid_redirect_uri` for redirect URIs, else
`invalid_client_metadata`): the command line prints it as one line, an HTTP API answers
with it. Nothing here prints or touches the store.

The rules: redirect URIs are absolute, without fragment or userinfo, and https, or http
on a loopback host (RFC 8252 §7.3, §8.3), or a private-use scheme of a native app named
after a reverse domain (RFC 8252 §7.1, `com.example.app:/callback`); audiences are among
`BROKER_AUDIENCES`; scopes are RFC 6749 §3.3 scope tokens the broker knows; a public
client gets no right that needs client authentication (client_credentials, token
exchange, introspection, ShotGrid tokens); CORS origins are `scheme://host[:port]`
(RFC 6454); the exchange lifetime is not negative; a back-channel logout URI (OIDC
Back-Channel Logout 1.0 §2.2) is absolute, https or loopback http, without fragment or
userinfo.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from broker.grants import ADMIN_SCOPE, registry
from broker.redirects import LOOPBACK_HOSTS, host_of
from broker.store import ClientRecord

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
KNOWN_GRANTS = registry.GRANT_TYPES
CONFIDENTIAL_GRANTS = registry.CONFIDENTIAL_ONLY
"""Grants that authenticate the client itself, so a client without a secret cannot hold them."""

KNOWN_SCOPES = ("openid", "profile", "email", "offline_access", ADMIN_SCOPE)
"""The OIDC scopes the broker serves, and `admin`, the admin API's (contract, "Demo clients")."""

MAX_URI_LENGTH = 2000
MAX_NAME_LENGTH = 200

_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")  # RFC 3986 §3.1
_HOST = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)")
#: Schemes no app may register as its own (RFC 8252 §7.1 wants a reverse domain name; these
#: are the browser's, and would hand a code to whatever page or file they open).
_RESERVED_SCHEMES = frozenset({"javascript", "data", "file", "blob", "about", "vbscript", "ftp"})


class ClientPolicyError(ValueError):
    """A field of a client registration breaks a rule. `field` is the `ClientRecord`
    attribute, `error` the RFC 7591 §3.2.2 code, the message says what is wrong with which
    value and what is accepted."""

    def __init__(self, field: str, message: str, *, error: str = "invalid_client_metadata"):
        super().__init__(message)
        self.field = field
        self.message = message
        self.error = error


@dataclass(frozen=True, slots=True)
class Limits:
    """What the deployment knows: the audiences of `BROKER_AUDIENCES`."""

    audiences: Collection[str]


FIELDS = (
    "client_id",
    "name",
    "grant_types",
    "redirect_uris",
    "post_logout_redirect_uris",
    "allowed_origins",
    "scopes",
    "audiences",
    "may_introspect",
    "may_exchange_shotgrid",
    "max_exchange_lifetime",
    "backchannel_logout_uri",
)


def check_client(
    record: ClientRecord, limits: Limits, *, changed: Iterable[str] | None = None
) -> None:
    """Raise `ClientPolicyError` for the first rule `record` breaks.

    `changed` (an update) limits the checks of single fields to the fields being changed,
    so a value that an older broker accepted does not block an unrelated change; the rules
    that relate fields to each other (a right against the client type, a grant against its
    redirect URIs) always run, since any change can break them."""
    fields = set(FIELDS if changed is None else changed)
    if "client_id" in fields:
        check_client_id(record.client_id)
    if "name" in fields:
        check_name(record.name)
    if "grant_types" in fields:
        check_grants(record.grant_types)
    if "redirect_uris" in fields:
        for uri in record.redirect_uris:
            check_redirect_uri(uri)
    if "post_logout_redirect_uris" in fields:
        for uri in record.post_logout_redirect_uris:
            check_redirect_uri(uri, field_name="post_logout_redirect_uris")
    if "allowed_origins" in fields:
        for origin in record.allowed_origins:
            check_origin(origin)
    if "scopes" in fields:
        check_scopes(record.scopes)
    if "audiences" in fields:
        check_audiences(record.audiences, limits.audiences)
    if "max_exchange_lifetime" in fields:
        check_exchange_lifetime(record.max_exchange_lifetime)
    if "backchannel_logout_uri" in fields and record.backchannel_logout_uri is not None:
        check_backchannel_logout_uri(record.backchannel_logout_uri)
    check_rights(record)


def check_client_id(client_id: str) -> None:
    if (
        not client_id
        or len(client_id) > MAX_NAME_LENGTH
        or not client_id.isprintable()
        or any(c.isspace() for c in client_id)
    ):
        raise ClientPolicyError(
            "client_id",
            f"client id {client_id!r} must be 1-{MAX_NAME_LENGTH} printable characters "
            "without spaces",
        )


def check_name(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ClientPolicyError(
            "name", f"the display name must be at most {MAX_NAME_LENGTH} printable characters"
        )


def check_grants(grants: Collection[str]) -> None:
    if not grants:
        raise ClientPolicyError("grant_types", "give at least one grant type")
    for grant in grants:
        if grant not in KNOWN_GRANTS:
            raise ClientPolicyError(
                "grant_types",
                f"unknown grant type {grant!r}; known: {', '.join(KNOWN_GRANTS)}",
            )


def check_redirect_uri(uri: str, *, field_name: str = "redirect_uris") -> None:
    """https anywhere, http on loopback only, or a native app's reverse-domain scheme;
    absolute, no fragment (RFC 6749 §3.1.2), no userinfo."""

    def refuse(why: str) -> ClientPolicyError:
        return ClientPolicyError(field_name, f"{uri!r} {why}", error="invalid_redirect_uri")

    if not uri or len(uri) > MAX_URI_LENGTH or not uri.isprintable() or " " in uri:
        raise refuse(f"must be 1-{MAX_URI_LENGTH} printable characters without spaces")
    parts = _split(uri)
    if parts is None or not parts.scheme:
        raise refuse(
            "is not an absolute URI; give https://host/path, http://127.0.0.1/path "
            "(loopback) or a native app's com.example.app:/path"
        )
    if "#" in uri:
        raise refuse("has a fragment (#...); redirect URIs may not (RFC 6749 §3.1.2)")
    if "\\" in uri:
        raise refuse("contains a backslash")
    scheme = parts.scheme
    if scheme in ("http", "https"):
        _check_web_authority(parts, refuse)
        if scheme == "http" and host_of(parts) not in LOOPBACK_HOSTS:
            raise refuse(
                "uses plain http outside loopback; use https, or http://127.0.0.1, "
                "http://[::1] or http://localhost for apps on the user's machine (RFC 8252 §7.3)"
            )
        return
    if (
        not _SCHEME.fullmatch(uri.split(":", 1)[0])
        or "." not in scheme
        or scheme in _RESERVED_SCHEMES
    ):
        raise refuse(
            "must be https, loopback http, or a native app's private-use scheme named "
            "after a reverse domain it owns, e.g. com.example.app:/callback (RFC 8252 §7.1)"
        )
    if parts.netloc or not parts.path.startswith("/"):
        raise refuse(
            "is a private-use URI: write it with one slash and no host, e.g. "
            f"{scheme}:/callback (RFC 8252 §7.1)"
        )


def check_backchannel_logout_uri(uri: str) -> None:
    """Where the broker POSTs logout tokens (OIDC Back-Channel Logout 1.0 §2.2): checked
    as web redirect URIs are (absolute, https or loopback http, no fragment or userinfo;
    a query is allowed). The spec's "same origin as a registered redirect URI" is not
    required: the services that log users out (DNA's API) often have no redirect URI."""

    def refuse(why: str) -> ClientPolicyError:
        return ClientPolicyError("backchannel_logout_uri", f"back-channel logout URI {uri!r} {why}")

    if not uri or len(uri) > MAX_URI_LENGTH or not uri.isprintable() or " " in uri:
        raise refuse(f"must be 1-{MAX_URI_LENGTH} printable characters without spaces")
    parts = _split(uri)
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise refuse("must be an absolute https:// URL (http:// on loopback only)")
    if "#" in uri or "\\" in uri:
        raise refuse("may not have a fragment (#...) or a backslash (§2.2)")
    _check_web_authority(parts, refuse)
    if parts.scheme == "http" and host_of(parts) not in LOOPBACK_HOSTS:
        raise refuse("uses plain http outside loopback; use https")


def check_origin(origin: str) -> None:
    """A CORS origin (RFC 6454): scheme://host[:port], nothing after it."""

    def refuse(why: str) -> ClientPolicyError:
        return ClientPolicyError("allowed_origins", f"origin {origin!r} {why}")

    parts = _split(origin) if origin and len(origin) <= MAX_URI_LENGTH else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise refuse("must read https://host or https://host:port")
    _check_web_authority(parts, refuse)
    if parts.path or parts.query or "?" in origin or "#" in origin:
        base = f"{parts.scheme}://{parts.netloc}"
        raise refuse(f"has a path, query or fragment; an origin is only {base}")
    if parts.scheme == "http" and host_of(parts) not in LOOPBACK_HOSTS:
        raise refuse("uses plain http outside loopback; use https")


def check_scopes(scopes: Collection[str]) -> None:
    for scope in scopes:
        if not _SCOPE_TOKEN.fullmatch(scope):
            raise ClientPolicyError(
                "scopes",
                f"scope {scope!r} is not one scope token (RFC 6749 §3.3: printable ASCII "
                "without spaces, quotes or backslashes); give one scope per --scope",
            )
        if scope not in KNOWN_SCOPES:
            raise ClientPolicyError(
                "scopes", f"unknown scope {scope!r}; known: {', '.join(KNOWN_SCOPES)}"
            )


def check_audiences(audiences: Collection[str], known: Collection[str]) -> None:
    for audience in audiences:
        if audience not in known:
            listed = ", ".join(known) or "(none)"
            raise ClientPolicyError(
                "audiences",
                f"audience {audience!r} is not in BROKER_AUDIENCES ({listed}); add it there first",
            )


def check_exchange_lifetime(seconds: int | None) -> None:
    if seconds is not None and seconds < 0:
        raise ClientPolicyError(
            "max_exchange_lifetime", f"must be 0 or more seconds, not {seconds}"
        )


def check_rights(record: ClientRecord) -> None:
    """Rights against the client type and the grants they need."""
    if record.public:
        for grant in record.grant_types:
            if grant in CONFIDENTIAL_GRANTS:
                raise ClientPolicyError(
                    "grant_types",
                    f"{grant} needs a confidential client (one with a secret): "
                    "client_credentials and token exchange authenticate the client itself",
                )
        if record.may_introspect:
            raise ClientPolicyError(
                "may_introspect", "only confidential clients may introspect (RFC 7662 §2.1)"
            )
        if record.may_exchange_shotgrid:
            raise ClientPolicyError(
                "may_exchange_shotgrid",
                "only confidential clients may obtain ShotGrid tokens by token exchange",
            )
    if "authorization_code" in record.grant_types and not record.redirect_uris:
        raise ClientPolicyError(
            "redirect_uris",
            "authorization_code needs at least one redirect URI",
            error="invalid_redirect_uri",
        )
    exchanges = TOKEN_EXCHANGE in record.grant_types
    if record.may_exchange_shotgrid and not exchanges:
        raise ClientPolicyError(
            "may_exchange_shotgrid", f"ShotGrid tokens come by token exchange: add {TOKEN_EXCHANGE}"
        )
    if ADMIN_SCOPE in record.scopes and (
        record.public or "client_credentials" not in record.grant_types
    ):
        # An admin token is only ever the client's own (client_credentials), never a
        # person's: the right needs a client that authenticates itself and that grant.
        raise ClientPolicyError(
            "scopes",
            "the admin right (--admin) needs a confidential client with the client_credentials "
            "grant",
        )


def _split(uri: str) -> SplitResult | None:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return None
    return parts


def _check_web_authority(parts: SplitResult, refuse: Callable[[str], ClientPolicyError]) -> None:
    if "@" in parts.netloc:
        raise refuse("carries user:password@; give the host alone")
    host = host_of(parts)
    if not host or not _HOST.fullmatch(host):
        raise refuse("has no valid host")
