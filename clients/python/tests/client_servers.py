"""Run ASGI apps under a real uvicorn server on a free 127.0.0.1 port, in a thread.

Startup is awaited through uvicorn's own `started` flag (no sleeps standing in for
synchronisation), and shutdown waits for the thread, so each test gets a clean server.

The same helper as the broker's tests/support/servers.py, kept as a copy on purpose: the
client's suite must run from its own directory with only its own test extras installed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerThread:
    """A uvicorn server in a background thread. `url` is `http://127.0.0.1:<port>`."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", **config
        )
        self.server = uvicorn.Server(cfg)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self._started = threading.Event()

    def start(self) -> ServerThread:
        self._thread.start()
        # uvicorn sets `started` once the socket is listening and lifespan startup is done.
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn exited during startup")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)


@contextlib.contextmanager
def serve(app: Any, port: int | None = None, **config: Any) -> Iterator[ServerThread]:
    server = ServerThread(app, port, **config).start()
    try:
        yield server
    finally:
        server.stop()
