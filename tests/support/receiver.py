"""A back-channel logout receiver for tests: a small Starlette app under a real uvicorn on
loopback that records every POST it gets and answers with the statuses a test queues
(200 once the queue is empty)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.servers import ServerThread


@dataclass
class Receiver:
    url: str = ""
    tokens: list[str] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    statuses: deque[int] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, *statuses: int) -> None:
        """Answer the next POSTs with these statuses, in order."""
        self.statuses.extend(statuses)

    def received(self) -> list[str]:
        with self.lock:
            return list(self.tokens)


@contextmanager
def logout_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    async def backchannel(request: Request) -> Response:
        form = parse_qs((await request.body()).decode())
        with receiver.lock:
            receiver.tokens.append(form.get("logout_token", [""])[0])
            receiver.content_types.append(request.headers.get("content-type", ""))
            status = receiver.statuses.popleft() if receiver.statuses else 200
        return Response(status_code=status, headers={"Cache-Control": "no-store"})

    app = Starlette(routes=[Route("/backchannel", backchannel, methods=["POST"])])
    server = ServerThread(app).start()
    receiver.url = f"{server.url}/backchannel"
    try:
        yield receiver
    finally:
        server.stop()
