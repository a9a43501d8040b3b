"""`/admin/api/...`: the admin API, JSON over HTTP for a bearer access token of a client with
the admin right (`client_credentials`, scope `admin`).

Thin handlers, the usual shape: read the path, query and JSON body on the event loop,
then one hop (`run_sync`) in which `broker.admin_actions.perform` authenticates, applies
the rate limit and runs the action, then render. Every error is an RFC 7807 problem
(`application/problem+json`: `type`, `title`, `status`, `detail`, and `field` when one
field of the request is at fault); 401 and the 403 for a token without `admin` carry an
RFC 6750 `WWW-Authenticate` challenge, 429 and 503 a `Retry-After`. A body error is
reported only after the caller is authenticated, so nothing is said to strangers but
"authenticate".
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authlib.oauth2.rfc6749 import InvalidRequestError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from broker import admin as registry
from broker import admin_actions as actions
from broker.admin_actions import (
    Admin,
    AdminRefusal,
    ClientChanges,
    InsufficientScope,
    NewClient,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from broker.components import Components
from broker.grants import ADMIN_SCOPE
from broker.http.oauth import BodyTooLarge, client_ip, read_body
from broker.http.problems import ADMIN_API_PREFIX, PROBLEM_JSON, problem, under_admin_api
from broker.http.threads import components, run_sync
from broker.store import AuditRecord, ClientRecord, KeyRecord

PREFIX = ADMIN_API_PREFIX
NO_STORE = {"Cache-Control": "no-store"}
MAX_NAME_ECHO = 64


class UnsupportedMediaType(AdminRefusal):
    status = 415
    problem = "unsupported-media-type"
    title = "Unsupported media type"


class PayloadTooLarge(AdminRefusal):
    status = 413
    problem = "too-large"
    title = "Request body too large"


class RouteNotFound(AdminRefusal):
    status = 404
    problem = "not-found"
    title = "Not found"
    outcome = "not_found"


class MethodNotAllowed(AdminRefusal):
    status = 405
    problem = "method-not-allowed"
    title = "Method not allowed"


# --- rendering ---------------------------------------------------------------------------------
def problem_response(refusal: AdminRefusal, issuer: str) -> Response:
    extra = {k: v for k, v in (("field", refusal.field), ("error", refusal.error)) if v}
    body = problem(refusal.problem, refusal.title, refusal.status, refusal.detail, **extra)
    headers = dict(NO_STORE)
    if isinstance(refusal, Unauthenticated):
        headers["WWW-Authenticate"] = challenge(issuer, refusal.error)
    elif isinstance(refusal, InsufficientScope):
        headers["WWW-Authenticate"] = challenge(issuer, "insufficient_scope")
    if isinstance(refusal, RateLimited | Unavailable):
        headers["Retry-After"] = str(refusal.retry_after)
    return JSONResponse(body, status_code=refusal.status, headers=headers, media_type=PROBLEM_JSON)


def challenge(issuer: str, error: str | None) -> str:
    """RFC 6750 §3: no error code when no token was sent at all."""
    params = [f'realm="{issuer}{PREFIX}"']
    if error is not None:
        params.append(f'error="{error}"')
    if error in (None, "insufficient_scope"):
        params.append(f'scope="{ADMIN_SCOPE}"')
    return "Bearer " + ", ".join(params)


def instant(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def session_json(view: actions.SessionView) -> dict[str, Any]:
    s = view.session
    return {
        "sid": s.sid,
        "user_id": s.user_id,
        "login": s.login,
        "clients": list(view.clients),
        "created_at": instant(s.auth_time),
        "last_used_at": instant(view.last_used_at),
        "expires_at": instant(s.expires_at),
        "auth_method": s.auth_method,
        "client_ip": s.client_ip,
        "user_agent": s.user_agent,
    }


def client_json(record: ClientRecord) -> dict[str, Any]:
    """Never the secret (nor its hash); the admin right apart from the scopes."""
    return {
        "client_id": record.client_id,
        "name": record.name,
        "confidential": not record.public,
        "grant_types": list(record.grant_types),
        "redirect_uris": list(record.redirect_uris),
        "post_logout_redirect_uris": list(record.post_logout_redirect_uris),
        "allowed_origins": list(record.allowed_origins),
        "scopes": [s for s in record.scopes if s != ADMIN_SCOPE],
        "audiences": list(record.audiences),
        "may_introspect": record.may_introspect,
        "may_exchange_shotgrid": record.may_exchange_shotgrid,
        "max_exchange_lifetime": record.max_exchange_lifetime,
        "admin": registry.is_admin_client(record),
    }


def key_json(record: KeyRecord) -> dict[str, Any]:
    return {
        "kid": record.kid,
        "alg": record.alg,
        "state": record.state.value,
        "created_at": instant(record.created_at),
        "activated_at": instant(record.activated_at),
        "retired_at": instant(record.retired_at),
        "drop_after": instant(record.drop_after),
    }


def event_json(record: AuditRecord) -> dict[str, Any]:
    return {
        **record.fields,
        "id": record.id,
        "at": instant(record.at),
        "event": record.event,
        "outcome": record.outcome,
        "login": record.login,
    }


# --- reading requests ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any = None
    headers: Mapping[str, str] | None = None
    changed_client: str | None = None
    """A client this call changed: the serving process forgets its cached copy at once."""


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler read off the request, for the one hop."""

    path: Mapping[str, str]
    query: Mapping[str, str]
    body: dict[str, Any] | None
    body_error: AdminRefusal | None


def _shown(name: str) -> str:
    return repr(name[:MAX_NAME_ECHO])


async def read_json(
    request: Request, limit: int
) -> tuple[dict[str, Any] | None, AdminRefusal | None]:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    try:
        raw = await read_body(request, limit)
    except BodyTooLarge:
        return None, PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    except InvalidRequestError:
        return None, AdminRefusal("Invalid Content-Length header.")
    if ctype != "application/json":
        return None, UnsupportedMediaType("Send the request body as application/json.")
    try:
        data = json.loads(raw)
    except ValueError:
        return None, AdminRefusal("The request body is not valid JSON.")
    if not isinstance(data, dict):
        return None, AdminRefusal("The request body must be a JSON object.")
    return data, None


def _bad(name: str, what: str) -> AdminRefusal:
    return AdminRefusal(f"{_shown(name)} must be {what}.", field=name)


def _kind(hint: Any) -> type[Any]:
    """tuple, bool, int or str: the JSON type a dataclass field takes (None aside)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (types.UnionType, typing.Union) else hint
    origin = typing.get_origin(base) or base
    return origin if origin in (tuple, bool, int) else str


def _read_fields(
    body: dict[str, Any], cls: type[Any], *, skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The body's fields as `cls`'s (a dataclass) typed values; an unknown field or a value
    of the wrong JSON type is a 400 naming the field. Only types are checked here: what a
    value may say is `broker.admin`'s to decide, as for the command line."""
    hints = {n: _kind(t) for n, t in typing.get_type_hints(cls).items() if n not in skip}
    out: dict[str, Any] = {}
    for name, value in body.items():
        kind = hints.get(name)
        if kind is None:
            known = ", ".join(sorted(hints))
            raise AdminRefusal(f"Unknown field {_shown(name)}; known: {known}.", field=name)
        if kind is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _bad(name, "a list of strings")
            out[name] = tuple(value)
        elif kind is bool:
            if not isinstance(value, bool):
                raise _bad(name, "true or false")
            out[name] = value
        elif kind is int:
            if value is None:
                out[name] = None
            elif isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**53:
                raise _bad(name, "an integer number of seconds or null")
            else:
                out[name] = value
        else:
            if not isinstance(value, str):
                raise _bad(name, "a string")
            out[name] = value
    return out


def new_client(body: dict[str, Any]) -> NewClient:
    values = _read_fields(body, NewClient)
    if "client_id" not in values:
        raise AdminRefusal("'client_id' is required.", field="client_id")
    return NewClient(**values)


def client_changes(body: dict[str, Any]) -> ClientChanges:
    values = _read_fields(body, ClientChanges, skip=("named",))
    if "max_exchange_lifetime" in values and values["max_exchange_lifetime"] is None:
        values["max_exchange_lifetime"] = 0  # null clears it, as 0 does
    if not values:
        raise AdminRefusal("Name at least one field to change.")
    return ClientChanges(**values, named=tuple(sorted(values)))


# --- the actions as routes ---------------------------------------------------------------------
Runner = Callable[[Components, Admin, Call], Reply]


def _sessions(parts: Components, admin: Admin, call: Call) -> Reply:
    login = call.path["login"]
    views = actions.user_sessions(parts, admin, login)
    return Reply(200, {"login": login, "sessions": [session_json(v) for v in views]})


def _end_sessions(parts: Components, admin: Admin, call: Call) -> Reply:
    login = call.path["login"]
    ended = actions.end_user_sessions(parts, admin, login)
    return Reply(200, {"login": login, "ended": ended})


def _unlock(parts: Components, admin: Admin, call: Call) -> Reply:
    actions.unlock_user(parts, admin, call.path["login"])
    return Reply(204)


def _end_session(parts: Components, admin: Admin, call: Call) -> Reply:
    actions.end_session(parts, admin, call.path["sid"])
    return Reply(204)


def _clients(parts: Components, admin: Admin, call: Call) -> Reply:
    return Reply(200, {"clients": [client_json(c) for c in actions.list_clients(parts, admin)]})


def _create_client(parts: Components, admin: Admin, call: Call) -> Reply:
    assert call.body is not None
    record, secret = actions.create_client(parts, admin, new_client(call.body))
    body = client_json(record)
    if secret is not None:
        body["client_secret"] = secret  # shown this once, never stored in clear
    location = f"{parts.issuer}{PREFIX}/clients/{record.client_id}"
    return Reply(201, body, {"Location": location}, changed_client=record.client_id)


def _client(parts: Components, admin: Admin, call: Call) -> Reply:
    return Reply(200, client_json(actions.get_client(parts, admin, call.path["client_id"])))


def _change_client(parts: Components, admin: Admin, call: Call) -> Reply:
    assert call.body is not None
    client_id = call.path["client_id"]
    record = actions.change_client(parts, admin, client_id, client_changes(call.body))
    return Reply(200, client_json(record), changed_client=client_id)


def _delete_client(parts: Components, admin: Admin, call: Call) -> Reply:
    client_id = call.path["client_id"]
    actions.delete_client(parts, admin, client_id)
    return Reply(204, changed_client=client_id)


def _keys(parts: Components, admin: Admin, call: Call) -> Reply:
    return Reply(200, {"keys": [key_json(k) for k in actions.list_keys(parts, admin)]})


def _rotate(parts: Components, admin: Admin, call: Call) -> Reply:
    rotation = actions.rotate_keys(parts, admin)
    rotated = [{"alg": a, "signing_kid": c, "next_kid": n} for a, c, n in rotation.rotated]
    return Reply(200, {"rotated": rotated, "warnings": list(rotation.warnings)})


def _audit(parts: Components, admin: Admin, call: Call) -> Reply:
    query = call.query
    limit_text = query.get("limit") or "100"
    if not limit_text.isdigit() or len(limit_text) > 6:
        raise AdminRefusal("'limit' must be a whole number.", field="limit")
    for name in ("login", "event"):
        if len(query.get(name) or "") > actions.MAX_LOGIN:
            raise AdminRefusal(f"{_shown(name)} is too long.", field=name)
    events = actions.audit_events(
        parts,
        admin,
        login=query.get("login") or None,
        event=query.get("event") or None,
        limit=int(limit_text),
    )
    return Reply(200, {"events": [event_json(e) for e in events]})


def _serve(
    parts: Components,
    action: str,
    run: Runner,
    call: Call,
    authorization: str | None,
    ip: str | None,
) -> Reply:
    def act(admin: Admin) -> Reply:
        if call.body_error is not None:
            raise call.body_error
        return run(parts, admin, call)

    return actions.perform(
        parts,
        action,
        lambda: actions.admin_from_bearer(parts, authorization, ip),
        act,
        ip=ip,
    )


def _route(path: str, method: str, action: str, run: Runner, *, body: bool = False) -> Route:
    async def endpoint(request: Request) -> Response:
        parts = components(request)
        data, error = (None, None)
        if body:
            data, error = await read_json(request, parts.settings.max_body_bytes)
        call = Call(dict(request.path_params), dict(request.query_params), data, error)
        try:
            reply = await run_sync(
                request,
                _serve,
                parts,
                action,
                run,
                call,
                request.headers.get("authorization"),
                client_ip(request),
            )
        except AdminRefusal as refusal:
            return problem_response(refusal, parts.issuer)
        if reply.changed_client is not None:
            request.app.state.oauth_server.forget_client(reply.changed_client)
        headers = {**NO_STORE, **(reply.headers or {})}
        if reply.body is None:
            return Response(status_code=reply.status, headers=headers)
        return JSONResponse(reply.body, status_code=reply.status, headers=headers)

    endpoint.__name__ = f"admin_{action}"
    return Route(PREFIX + path, endpoint, methods=[method], name=f"admin_{action}")


admin_routes = [
    _route("/users/{login}/sessions", "GET", "sessions_list", _sessions),
    _route("/users/{login}/sessions", "DELETE", "sessions_end_all", _end_sessions),
    _route("/users/{login}/unlock", "POST", "user_unlock", _unlock),
    _route("/sessions/{sid}", "DELETE", "session_end", _end_session),
    _route("/clients", "GET", "clients_list", _clients),
    _route("/clients", "POST", "client_create", _create_client, body=True),
    _route("/clients/{client_id}", "GET", "client_get", _client),
    _route("/clients/{client_id}", "PATCH", "client_update", _change_client, body=True),
    _route("/clients/{client_id}", "DELETE", "client_delete", _delete_client),
    _route("/keys", "GET", "keys_list", _keys),
    _route("/keys/rotate", "POST", "keys_rotate", _rotate),
    _route("/audit", "GET", "audit_list", _audit),
]


def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405 (no route, wrong method) as problems under the admin API,
    in Starlette's own plain text elsewhere."""
    assert isinstance(exc, HTTPException)
    if under_admin_api(request.url.path):
        issuer = components(request).issuer if hasattr(request.app.state, "components") else ""
        refusal: AdminRefusal
        if exc.status_code == 405:
            refusal = MethodNotAllowed("This method is not allowed on this path.")
        elif exc.status_code == 404:
            refusal = RouteNotFound("No admin API operation has this path.")
        else:
            refusal = AdminRefusal(str(exc.detail))
            refusal.status = exc.status_code
        response = problem_response(refusal, issuer)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
