"""One module per grant type; each maps upstream and store failures to RFC 6749 errors."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio.from_thread
from authlib.oauth2.rfc6749 import InvalidScopeError

T = TypeVar("T")

#: Token responses are never cached (RFC 6749 §5.1).
TOKEN_HEADERS = [
    ("Content-Type", "application/json"),
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
]

DEFAULT_SCOPE = "profile email"


#: The event loop of the request being served, carried into worker threads with the
#: request's context (`broker.http.threads.run_sync` sets it).
request_loop: contextvars.ContextVar[asyncio.AbstractEventLoop] = contextvars.ContextVar(
    "request_loop"
)


def run_async(func: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """Run an upstream coroutine from an Authlib worker thread on the server's loop, so
    the upstream client's pooled connections are shared by every request."""
    loop = request_loop.get(None)
    if loop is None:  # an anyio worker thread (run_in_threadpool)
        return anyio.from_thread.run(func, *args)
    return asyncio.run_coroutine_threadsafe(func(*args), loop).result()


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
