"""The one hop per request: the synchronous core (Authlib, the store, ShotGrid calls) runs
on a worker thread, never on the event loop, and never hops back.

`CorePool` is the hop: the event loop puts the call on a queue and awaits a plain asyncio
future, which the worker resolves with `call_soon_threadsafe`. `loop.run_in_executor` on a
`ThreadPoolExecutor` (which it replaces; anyio's `to_thread` cost four times that again)
does the same with a `concurrent.futures.Future` and its condition variable per call,
callbacks chaining the two futures both ways, and a check that the callable is no
coroutine function: about a sixth of the Python work of a client_credentials request.
The caller's contextvars (request id, log bindings) travel with the call, and so does the
app's audit sink. Every route and
middleware that needs the core uses `run_sync`; nothing else moves work off the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.datastructures import State
from starlette.requests import HTTPConnection

from broker.components import Components
from broker.events import bind_audit_sink

T = TypeVar("T")

DEFAULT_THREADS = 32

_Call = tuple[
    asyncio.AbstractEventLoop,
    "asyncio.Future[Any]",
    contextvars.Context,
    Callable[..., Any],
    tuple[Any, ...],
]


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if not future.cancelled():  # the awaiting request went away meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.cancelled():
        future.set_exception(exc)


def _answer(
    loop: asyncio.AbstractEventLoop,
    how: Callable[[asyncio.Future[Any], Any], None],
    future: asyncio.Future[Any],
    value: Any,
) -> None:
    # RuntimeError: the loop has closed, so nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(how, future, value)


class CorePool:
    """Up to `threads` worker threads, started as calls need them (an idle one is reused
    first, as `ThreadPoolExecutor` does): calls that wait on ShotGrid or a remote store
    must not hold the others up."""

    def __init__(self, threads: int = DEFAULT_THREADS, name: str = "broker-core") -> None:
        self._max = threads
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run `func(*args)` on a worker with the caller's contextvars; the future is the
        running loop's."""
        return self.submit_in(contextvars.copy_context(), func, *args)

    def submit_in(
        self, context: contextvars.Context, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        """Run `func(*args)` on a worker in `context`; the future is the running loop's."""
        if self._closed:
            raise RuntimeError("the core pool is shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((loop, future, context, func, args))
        if not self._idle.acquire(blocking=False):
            self._start_thread()
        return future

    def _start_thread(self) -> None:
        with self._lock:
            if len(self._threads) < self._max and not self._closed:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            loop, future, context, func, args = call
            del call
            outcome: Callable[[asyncio.Future[Any], Any], None]
            try:
                result = context.run(func, *args)
            except BaseException as exc:
                outcome, value = _fail, exc
                del exc
            else:
                outcome, value = _resolve, result
                del result
            # Idle from here on: a call the answer prompts finds this thread free.
            self._idle.release()
            _answer(loop, outcome, future, value)
            del loop, future, context, func, args, value

    def shutdown(self, wait: bool = True) -> None:
        """Finish the calls already queued, then stop the threads."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._calls.put(None)
        if wait:
            for thread in threads:
                thread.join()


def make_executor(threads: int = DEFAULT_THREADS) -> CorePool:
    return CorePool(threads)


def components(request: HTTPConnection) -> Components:
    parts: Components = request.app.state.components
    return parts


async def run_on(state: State, func: Callable[..., T], *args: Any) -> T:
    """Run `func(*args)` on the app's worker threads (for ASGI middleware holding only the
    app's state)."""
    pool: CorePool = state.executor
    context = contextvars.copy_context()
    # The app's audit trail receives what the core audits in this call (broker.events).
    context.run(bind_audit_sink, getattr(state, "audit_sink", None))
    return await pool.submit_in(context, func, *args)


async def run_sync(request: HTTPConnection, func: Callable[..., T], *args: Any) -> T:
    """Run `func(*args)` on the app's worker threads and await its result."""
    return await run_on(request.app.state, func, *args)
