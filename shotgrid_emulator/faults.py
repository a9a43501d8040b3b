"""Fault injection for the emulator: added latency, 5xx answers and dropped connections.

A fault targets either a path prefix (starting with "/") or a call name as counted in
`ShotGridEmulator.calls` ("token", "token:password", "api3:read", "rest:projects", ...);
a name also matches its sub-names ("token" matches "token:refresh_token").
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Fault:
    target: str
    latency: float = 0.0
    status: int | None = None
    drop: bool = False
    times: int | None = None
    """Fire this many times, then disappear (None: until cleared)."""

    def matches(self, path: str, names: tuple[str, ...]) -> bool:
        if self.target.startswith("/"):
            return path.startswith(self.target)
        return any(n == self.target or n.startswith(self.target + ":") for n in names)


class Faults:
    """The active faults. Thread-safe: tests set them from the test thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def set(
        self,
        target: str,
        *,
        latency: float = 0.0,
        status: int | None = None,
        drop: bool = False,
        times: int | None = None,
    ) -> Fault:
        if status is not None and not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (4xx/5xx)")
        fault = Fault(target, latency, status, drop, times)
        with self._lock:
            self._faults = [f for f in self._faults if f.target != target]
            self._faults.append(fault)
        return fault

    def clear(self, target: str | None = None) -> None:
        with self._lock:
            self._faults = [f for f in self._faults if target is not None and f.target != target]

    def take(self, path: str, names: tuple[str, ...]) -> Fault | None:
        """The fault to apply to this call, counting down its `times`."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(path, names):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"target": f.target, "latency": f.latency, "status": f.status, "drop": f.drop}
                for f in self._faults
            ]


RAW_SEND = "shotgrid_emulator.raw_send"
"""Scope key under which the outermost ASGI layer keeps the server's own `send`."""


async def drop_connection(scope: MutableMapping[str, Any], receive: Any) -> None:
    """Close the client's TCP connection without answering.

    ASGI has no "drop" message, and an exception makes uvicorn answer 500. uvicorn's `send`
    is a bound method of its request cycle, which holds the transport; aborting that gives
    the client a reset with no response. We then wait for uvicorn's own disconnect event,
    so it knows the peer is gone and does not try to write a 500 either.
    """
    cycle = getattr(scope.get(RAW_SEND), "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("dropping a connection needs the uvicorn server")
    transport.abort()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0)
