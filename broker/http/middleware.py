"""Pure ASGI middleware that wraps every route: request id and access log, request metrics,
and the global request body bound.

Pure ASGI (not Starlette's BaseHTTPMiddleware) so streaming is untouched and the context
variables bound here (the request id) reach the handler, the threadpool it calls into,
and every log line of the request.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from contextvars import ContextVar

import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker import metrics
from broker.grants import registry
from broker.http.problems import PROBLEM_JSON, problem, under_admin_api
from broker.logs import EventLogger

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.encode()
CLIENT_CLOSED_REQUEST = 499
"""Status recorded (never sent) for a request whose client left mid-request (nginx's 499)."""
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_LOGGED_PATH = 200
MAX_LOGGED_USER_AGENT = 200
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")

_log = EventLogger("broker.http.access")
_access = logging.getLogger("broker.http.access")

ROUTINE_ENDPOINTS = frozenset(
    {"/jwks.json", "/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"}
)
"""Public documents every relying party and resource server re-reads on its own schedule,
the same bytes for every caller. Their successful reads are access lines at DEBUG, not
INFO: at a few thousand key-set reads a second they would be most of the log (and a third
of the work of serving them), while saying nothing an operator acts on; the request
metrics count them all the same, and refusals stay at INFO."""

_request_notes: ContextVar[dict[str, str] | None] = ContextVar("broker_request_notes", default=None)


def note(**labels: str) -> None:
    """Attach labels to the current request's access log line and metrics (e.g. the grant
    type and the OAuth error of a /token request). A no-op outside a request."""
    notes = _request_notes.get()
    if notes is None:
        return
    for key, value in labels.items():
        if key == "grant_type" and value not in GRANT_TYPES:
            value = "other" if value else "none"
        notes[key] = value


#: Label values the request metrics accept (the registered grants); anything else is
#: counted as `other`, so an attacker's garbage cannot grow the number of time series.
GRANT_TYPES = frozenset(registry.GRANT_TYPES)
OAUTH_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "invalid_target",
        "unsupported_token_type",
        "unsupported_response_type",
        "access_denied",
        "temporarily_unavailable",
        "invalid_token",
        "insufficient_scope",
        "login_required",
        "interaction_required",
        "request_not_supported",
        "request_uri_not_supported",
        "authorization_pending",
        "slow_down",
        "expired_token",
    }
)


def note_outcome(error: str) -> None:
    """The outcome label of a request refused with an OAuth error code, whatever its
    status (a login form shown again with its error is 200, and a refusal still)."""
    note(outcome=error if error in OAUTH_ERRORS else "other_error")


def note_oauth_result(status: int, body: object) -> None:
    """The outcome label of an OAuth response: `success`, or its RFC error code."""
    error = body.get("error") if isinstance(body, dict) else None
    if status < 400:
        note(outcome="success")
    elif isinstance(error, str) and error in OAUTH_ERRORS:
        note(outcome=error)


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID when it is short and made of safe characters (it goes into
    logs and a response header), else a fresh one."""
    for name, value in headers:
        if name.lower() == _REQUEST_ID_KEY:
            try:
                candidate = value.decode("ascii")
            except UnicodeDecodeError:
                break
            if _SAFE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    # 128 random bits as 32 hex digits, like uuid4().hex, but from the process's
    # Mersenne Twister (reseeded in a forked child): a request id must be unique, not
    # secret, and os.urandom would release the GIL on the event loop at every request.
    return f"{random.getrandbits(128):032x}"


def _bounded_text(value: str, limit: int) -> str:
    """Printable ASCII only (a console log line cannot be forged with a newline or an
    escape sequence), cut at `limit` characters with a marker."""
    value = _UNPRINTABLE.sub("?", value)
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _user_agent(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"user-agent":
            return _bounded_text(value.decode("latin-1"), MAX_LOGGED_USER_AGENT)
    return None


def _endpoint_label(scope: Scope) -> str:
    """The route's path template (bounded cardinality), `other` for unmatched paths."""
    endpoint = scope.get("endpoint")
    app = scope.get("app")
    if endpoint is None or app is None:
        return "other"
    cache: dict[int, str] = app.__dict__.setdefault("_broker_endpoint_labels", {})
    label = cache.get(id(endpoint))
    if label is None:
        label = next(
            (r.path for r in app.routes if getattr(r, "endpoint", None) is endpoint), "other"
        )
        cache[id(endpoint)] = label
    return label


class RequestContextMiddleware:
    """Request id (echoed as `X-Request-ID`, bound to every log line), one access log line
    per request, and the request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope.get("headers", []))
        notes: dict[str, str] = {}
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        notes_token = _request_notes.set(notes)
        status = 500
        status_started = False
        started = time.perf_counter()

        key, value = _REQUEST_ID_KEY, request_id.encode()
        logged = False

        def log_line() -> None:
            nonlocal logged
            logged = True
            elapsed = time.perf_counter() - started
            endpoint = _endpoint_label(scope)
            metrics.observe_request(endpoint, scope.get("method", ""), status, elapsed, notes)
            routine = status < 400 and endpoint in ROUTINE_ENDPOINTS
            if routine and not _access.isEnabledFor(logging.DEBUG):
                return
            where: dict[str, str] = {}
            if endpoint == "other":
                # No route template to name it by: the path, bounded. Never the query
                # string, where codes and tokens travel.
                where["path"] = _bounded_text(scope.get("path", ""), MAX_LOGGED_PATH)
            (_log.debug if routine else _log.info)(
                "http_request",
                method=scope.get("method"),
                endpoint=endpoint,
                **where,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                client_ip=(scope.get("client") or (None,))[0],
                user_agent=_user_agent(scope.get("headers", [])),
                **notes,
            )

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_started
            if message["type"] == "http.response.start":
                status = message["status"]
                status_started = True
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != key]
                headers.append((key, value))
                message = {**message, "headers": headers}
            elif not message.get("more_body", False) and not logged:
                # The line and the metric are written before the last byte leaves, so
                # whoever has the whole response (a client, a test, a log shipper reading
                # alongside) can count on the line being there already.
                log_line()
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client went away before its request was read whole: nobody is left to
            # answer, and it is the client's doing, not a server error (no 5xx, no
            # traceback). uvicorn sends nothing for a cycle whose client is gone.
            if status_started:
                raise
            status = CLIENT_CLOSED_REQUEST
            notes["outcome"] = "client_disconnected"
        finally:
            if not logged:
                log_line()
            _request_notes.reset(notes_token)
            structlog.contextvars.reset_contextvars(**tokens)


class BodyTooLargeError(Exception):
    """Raised from `receive` when a body passes the bound; turned into 413 below."""


def too_large_response_parts(path: str = "") -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """413 in the shape of the API asked: RFC 6749 §5.2 JSON, or an RFC 7807 problem under
    the admin API."""
    content_type = b"application/json"
    fields: dict[str, object] = {
        "error": "invalid_request",
        "error_description": "The request body is too large.",
    }
    if under_admin_api(path):
        content_type = PROBLEM_JSON.encode()
        fields = problem(
            "too-large", "Request body too large", 413, "The request body is too large."
        )
    body = json.dumps(fields).encode()
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"pragma", b"no-cache"),
    ]
    return body, headers


class BodyLimitMiddleware:
    """Every route's request body is bounded: a declared Content-Length above `limit` is
    refused before the app runs, and a streamed body is cut off when it passes `limit`.
    Both get 413 with an RFC 6749 §5.2 JSON body."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = False
        for name, value in scope.get("headers", []):
            name = name.lower()
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the route's own parsing refuses it as invalid_request
                    counted = True
                if declared > self.limit:
                    await self._refuse(scope, send)
                    return
            elif name == b"transfer-encoding":
                counted = True
        if not counted:
            # No body, or one framed by a Content-Length within the bound: the server reads
            # no more than that (RFC 9112 §6.3), so there is nothing to count.
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except BodyTooLargeError:
            if started:
                raise
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body, headers = too_large_response_parts(scope.get("path", ""))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
