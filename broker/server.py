"""The Authlib authorization server, framework-free: the glue Authlib ships only for Flask
and Django (see ../shared/research/authlib.md §1).

The HTTP layer reads the body asynchronously and hands over a fully materialised
`BrokerRequest`; Authlib then runs synchronously on a worker thread (the request's one hop
off the event loop). The grants it dispatches to come from `broker/grants/registry.py`.
`handle_response` returns a plain `(status, body, headers)` triple that `broker/http`
renders, so nothing here imports Starlette. Store and upstream outages raised inside
Authlib callbacks become 503 `temporarily_unavailable` here, in one place.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from authlib.oauth2 import AuthorizationServer, OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, InvalidClientError
from authlib.oauth2.rfc6749.requests import OAuth2Payload

from broker.components import Components
from broker.errors import TemporarilyUnavailableError
from broker.grants import GrantSpec
from broker.store import ClientRecord, StoreUnavailable
from broker.tokens.secrets import check_client_secret
from broker.upstream import UpstreamUnavailable

log = logging.getLogger("broker.server")

SCOPES_SUPPORTED = ["openid", "profile", "email", "offline_access", "admin"]
"""Every scope the broker serves (RFC 8414 `scopes_supported`): the four a person's
tokens may carry, and `admin`, which only an admin client's own token may (see
`broker.grants.ADMIN_SCOPE`). Listed because it is true and the admin API is documented
anyway; asking for it without the right is `invalid_scope` like any scope not allowed."""

Response = tuple[int, Any, list[tuple[str, str]]]


class _MultiDict(dict[str, str]):
    """First value wins for `get`; `lists` keeps every value for duplicate checks."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.lists: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in pairs:
            self.lists[key].append(value)
            self.setdefault(key, value)


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._data = _MultiDict(pairs)

    @property
    def data(self) -> _MultiDict:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._data.lists


_SECURE_URIS: set[str] = set()
"""URIs that passed Authlib's transport check once (the issuer's, plus a path)."""
_AUTHLIB_FIELDS: dict[str, Any] = dict(vars(OAuth2Request("POST", "https://issuer.invalid/")))


class BrokerRequest(OAuth2Request):  # type: ignore[misc]
    """An OAuth2Request whose form and query were read before Authlib runs.

    `uri` is built from the issuer, not from the request, so metadata and checks never
    depend on Host or forwarded headers.
    """

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Mapping[str, str],
        form: Sequence[tuple[str, str]] = (),
        query: Sequence[tuple[str, str]] = (),
        *,
        client_ip: str | None = None,
    ) -> None:
        if uri in _SECURE_URIS:
            # OAuth2Request.__init__ without its transport check: the URI is the issuer's
            # plus a path, and the check parses it and the issuer's host (ipaddress) for
            # the same answer at every request. Its attributes come from one request made
            # by Authlib itself (a test holds them equal to Authlib's own, per request).
            self.__dict__.update(_AUTHLIB_FIELDS)
            self.method, self.uri, self.headers = method, uri, headers or {}
        else:
            super().__init__(method=method, uri=uri, headers=headers)
            if len(_SECURE_URIS) < 64:
                _SECURE_URIS.add(uri)
        self._form = _MultiDict(form)
        self._args = _MultiDict(query)
        self.payload = _Payload([*query, *form])
        self.client_ip = client_ip

    @property
    def args(self) -> _MultiDict:
        return self._args

    @property
    def form(self) -> _MultiDict:
        return self._form


class OAuthClient(ClientMixin):  # type: ignore[misc]
    """Authlib's view of a stored client."""

    def __init__(self, record: ClientRecord) -> None:
        self.record = record
        self.client_id = record.client_id

    def get_client_id(self) -> str:
        return self.record.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.record.redirect_uris[0] if self.record.redirect_uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        allowed = set(self.record.scopes)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        from broker.redirects import redirect_uri_allowed

        return redirect_uri_allowed(redirect_uri, self.record.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        return check_client_secret(client_secret, self.record.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.record.public:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.record.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.record.grant_types


def client_auth_refusal(methods: Sequence[str]) -> str:
    secret_methods = [m for m in methods if m != "none"]
    text = "Client authentication failed: unknown client_id, wrong client secret"
    if "none" not in methods:
        text += ", or no client credentials (this endpoint needs a confidential client)"
    return f"{text}. Accepted methods here: {', '.join(secret_methods or ['none'])}."


class BrokerAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    CLIENT_CACHE_SECONDS = 5.0
    """Registry changes (clients add/remove, from any process) apply within this delay;
    in exchange every token request skips a store read."""

    def __init__(self, components: Components, grants: Sequence[GrantSpec] = ()) -> None:
        super().__init__(scopes_supported=SCOPES_SUPPORTED)
        self.components = components
        self._clients: dict[str, tuple[float, ClientRecord | None]] = {}
        for spec in grants:
            self.register_grant(spec.handler)
            for _path, endpoint in spec.endpoints:
                self.register_endpoint(endpoint)

    def query_client(self, client_id: str) -> OAuthClient | None:
        if not client_id or len(client_id) > 200:
            return None
        now = time.monotonic()
        cached = self._clients.get(client_id)
        if cached is not None and now - cached[0] < self.CLIENT_CACHE_SECONDS:
            record = cached[1]
        else:
            record = self.components.store.get_client(client_id)
            if len(self._clients) > 1000:  # unknown ids must not grow it without bound
                self._clients.clear()
            self._clients[client_id] = (now, record)
        return OAuthClient(record) if record else None

    def forget_client(self, client_id: str) -> None:
        """Drop a cached registration at once (the admin API changed it in this process)."""
        self._clients.pop(client_id, None)

    def authenticate_client(
        self, request: BrokerRequest, methods: list[str], endpoint: str = "token"
    ) -> OAuthClient:
        """Authlib's refusal reads "cannot authenticate with methods: ['client_secret_basic',
        ...]" (a Python list); clients show error_description to people, so say it plainly."""
        try:
            client: OAuthClient = super().authenticate_client(request, methods, endpoint)
            return client
        except InvalidClientError as exc:
            if (exc.description or "").startswith("The client cannot authenticate"):
                exc.description = client_auth_refusal(methods)
            raise

    def save_token(self, token: dict[str, Any], request: BrokerRequest) -> None:
        """Grants persist what they issue themselves (atomically, in the store)."""

    def create_oauth2_request(self, request: Any) -> BrokerRequest:
        if isinstance(request, BrokerRequest):
            return request
        raise TypeError("build a BrokerRequest in the HTTP layer first: Authlib is synchronous")

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        return status, body, list(headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Authlib calls this on every client authentication; nothing to do yet."""

    def _guarded(self, func: Callable[..., Response], *args: Any) -> Response:
        request = args[-1]
        try:
            result: Response = func(*args)
            return result
        except (StoreUnavailable, UpstreamUnavailable) as exc:
            log.warning("dependency unavailable: %s", exc.__class__.__name__)
            if isinstance(exc, StoreUnavailable):
                from broker import metrics

                metrics.store_error("oauth")
            what = "ShotGrid" if isinstance(exc, UpstreamUnavailable) else "the token store"
            err = TemporarilyUnavailableError(
                f"{what} is not reachable right now; nothing was changed. Try again shortly.",
                retry_after=5,
            )
            return self.handle_error_response(request, err)  # type: ignore[no-any-return]

    def create_token_response(self, request: BrokerRequest | None = None) -> Response:
        return self._guarded(super().create_token_response, request)

    def create_endpoint_response(self, name: str, request: BrokerRequest | None = None) -> Response:
        return self._guarded(super().create_endpoint_response, name, request)

    def error_response(self, error: OAuth2Error) -> Response:
        return self.handle_response(*error())
