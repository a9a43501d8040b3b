"""CorePool, the one thread hop per request: results, errors and contextvars cross it; idle
threads are reused, busy ones never wait for each other, and never more than the bound."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from broker.http.threads import CorePool

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def test_results_errors_and_context_cross_the_hop() -> None:
    pool = CorePool(4)

    def boom() -> None:
        raise KeyError("missing")

    async def main() -> None:
        request_id.set("r-1")
        assert await pool.submit(lambda a, b: a + b, 2, 3) == 5
        assert await pool.submit(request_id.get) == "r-1"
        assert await pool.submit(threading.current_thread) is not threading.current_thread()
        with pytest.raises(KeyError, match="missing"):
            await pool.submit(boom)

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()


def test_idle_threads_are_reused() -> None:
    pool = CorePool(8)

    async def main() -> set[str]:
        return {await pool.submit(lambda: threading.current_thread().name) for _ in range(20)}

    try:
        assert len(asyncio.run(main())) == 1
    finally:
        pool.shutdown()


def test_busy_calls_run_side_by_side_up_to_the_bound() -> None:
    """Three calls that each wait for all three finish only if they run at once; with a
    bound of two the third waits for a free thread instead."""
    pool = CorePool(3)
    barrier = threading.Barrier(3, timeout=10)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(pool.submit(barrier.wait) for _ in range(3))))

    try:
        assert sorted(asyncio.run(main())) == [0, 1, 2]
    finally:
        pool.shutdown()

    small = CorePool(2)
    running = threading.Semaphore(0)
    release = threading.Event()
    peak = 0
    lock = threading.Lock()
    now = 0

    def hold() -> None:
        nonlocal peak, now
        with lock:
            now += 1
            peak = max(peak, now)
        running.release()
        assert release.wait(10)
        with lock:
            now -= 1

    async def bounded() -> None:
        calls = [small.submit(hold) for _ in range(3)]
        await asyncio.to_thread(running.acquire, timeout=10)
        await asyncio.to_thread(running.acquire, timeout=10)
        release.set()
        await asyncio.gather(*calls)

    try:
        asyncio.run(bounded())
    finally:
        small.shutdown()
    assert peak == 2


def test_an_abandoned_call_finishes_and_the_pool_carries_on() -> None:
    pool = CorePool(1)
    started, finish = threading.Event(), threading.Event()
    done: list[str] = []

    def slow() -> str:
        started.set()
        assert finish.wait(10)
        done.append("slow")
        return "late"

    async def main() -> str:
        task = asyncio.ensure_future(pool.submit(slow))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()  # the request went away
        finish.set()
        return await pool.submit(lambda: "next")

    try:
        assert asyncio.run(main()) == "next"
    finally:
        pool.shutdown()
    assert done == ["slow"]


def test_shutdown_finishes_queued_calls_then_refuses() -> None:
    pool = CorePool(1)
    done: list[int] = []

    async def main() -> None:
        for n in range(3):
            pool.submit(done.append, n)
        await asyncio.to_thread(pool.shutdown)
        with pytest.raises(RuntimeError):
            pool.submit(done.append, 99)

    asyncio.run(main())
    assert done == [0, 1, 2]
