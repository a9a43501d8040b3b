"""Run ASGI apps under a real uvicorn server on a free 127.0.0.1 port, in a thread.

Startup is awaited through uvicorn's own `started` flag (no sleeps standing in for
synchronisation), and shutdown waits for the thread, so each test gets a clean server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn


def free_port() -> int:
    """A port free now, for a server another process will bind (a subprocess)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: Ports held bound by this process until a ServerThread takes the socket over, so no
#: other test run on the machine can take the port between choosing it and serving on it.
_RESERVED: dict[int, socket.socket] = {}
_RESERVED_LOCK = threading.Lock()


def reserve_port() -> int:
    """A port for an in-process server, held bound until `ServerThread(port=...)` serves on
    it (a free_port() chosen first and bound later can be taken by a concurrent run)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    with _RESERVED_LOCK:
        _RESERVED[port] = sock
    return port


def _take_reserved(port: int) -> socket.socket | None:
    with _RESERVED_LOCK:
        return _RESERVED.pop(port, None)


class ServerThread:
    """A uvicorn server in a background thread. `url` is `http://127.0.0.1:<port>`."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or reserve_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._sock = _take_reserved(self.port)
        cfg = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", **config
        )
        self.server = uvicorn.Server(cfg)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()

    def _run(self) -> None:
        if self._sock is None:
            self.server.run()
        else:
            self._sock.listen(128)
            self.server.run(sockets=[self._sock])

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
        if self._sock is not None:
            self._sock.close()


@contextlib.contextmanager
def serve(app: Any, port: int | None = None, **config: Any) -> Iterator[ServerThread]:
    server = ServerThread(app, port, **config).start()
    try:
        yield server
    finally:
        server.stop()
