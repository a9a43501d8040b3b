"""The one hop per request: the synchronous core (Authlib, the store, ShotGrid calls) runs
on a worker thread, never on the event loop, and never hops back.

A plain `ThreadPoolExecutor` rather than anyio's `to_thread`: under concurrent load the
hop costs about 11 µs instead of 48 µs here, which is a tenth of a refresh grant's budget.
The caller's contextvars (request id, log bindings) travel with the call, and so does the
app's audit sink. Every route and
middleware that needs the core uses `run_sync`; nothing else moves work off the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.datastructures import State
from starlette.requests import HTTPConnection

from broker.components import Components
from broker.events import bind_audit_sink

T = TypeVar("T")

DEFAULT_THREADS = 32


def make_executor(threads: int = DEFAULT_THREADS) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="broker-core")


def components(request: HTTPConnection) -> Components:
    parts: Components = request.app.state.components
    return parts


async def run_on(state: State, func: Callable[..., T], *args: Any) -> T:
    """Run `func(*args)` on the app's worker threads (for ASGI middleware holding only the
    app's state)."""
    executor: ThreadPoolExecutor = state.executor
    ctx = contextvars.copy_context()
    # The app's audit trail receives what the core audits in this call (broker.events).
    ctx.run(bind_audit_sink, getattr(state, "audit_sink", None))
    call = functools.partial(ctx.run, func, *args)
    return await asyncio.get_running_loop().run_in_executor(executor, call)


async def run_sync(request: HTTPConnection, func: Callable[..., T], *args: Any) -> T:
    """Run `func(*args)` on the app's worker threads and await its result."""
    return await run_on(request.app.state, func, *args)
