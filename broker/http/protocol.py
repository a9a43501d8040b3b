"""uvicorn's httptools (llhttp, in C) HTTP/1.1 protocol with a bound on the request head.

uvicorn bounds request heads only on its h11 parser (`h11_max_incomplete_event_size`),
which parses in Python and cost `serve` about 70 µs of event-loop CPU per request more
than httptools (bench/token_bench.py --target serve). httptools has no bound of its own,
and it buffers a header's name and value until they are complete, so the bound is kept
at two points:

- when the head is complete, its size (target, header names and values) is checked
  exactly: a head over the bound never reaches the application;
- while a head is incomplete, the bytes received for it are counted, so a client
  streaming an endless head is cut off once it passes the bound. A read that starts a
  head on an idle connection counts whole (it is all head); a head that starts behind a
  pipelined request in the same read counts from the next read on, since httptools does
  not say where in the read it began (memory held stays under the bound plus one read).

A refused head gets `431 Request Header Fields Too Large` (RFC 6585 §5) and the
connection is closed, as h11's refusal closes it.

Time is bounded too (`BROKER_HTTP_HEAD_TIMEOUT`, `BROKER_HTTP_IDLE_TIMEOUT`), since a
connection that sends slowly or not at all costs a socket and memory for as long as it is
held open. uvicorn arms its keep-alive timer only after a response, so a connection that
never sends a request was never closed: the same timer is armed when the connection is
made. A head still incomplete `head_timeout` seconds after its first bytes arrived gets
`408 Request Timeout` (RFC 9110 §15.5.9) and the connection is closed, however steadily
the bytes trickle in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_LIMIT_BYTES = 16 * 1024
"""Largest request head (request target plus header names and values) accepted."""

DEFAULT_HEAD_TIMEOUT = 10.0
"""Seconds for a complete request head (the `http_head_timeout` setting's default)."""

_log = logging.getLogger("broker.http.protocol")

_REFUSAL = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 34\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Request header fields too large.\r\n"
)


_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 20\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Request timed out.\r\n"
)


class HeadTooLarge(Exception):
    """Raised inside the parser callback: httptools then stops parsing this connection."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    head_limit = HEAD_LIMIT_BYTES

    def __init__(self, *args: Any, head_timeout: float = DEFAULT_HEAD_TIMEOUT, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_message = False
        self._head_open = False
        self._head_bytes = 0
        self._begun_in_read = 0
        self._head_refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn's keep-alive timer, armed before the first request as well.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_refused:
            return
        idle_before = not self._in_message
        self._begun_in_read = 0
        super().data_received(data)
        if self._head_refused or self.transport.is_closing():
            return
        # The head clock starts at the first read of a head that is still incomplete after
        # it, or of bytes that begin no request at all (they are the start of one, or
        # garbage); a head that completes within its first read never arms it.
        if self._head_timer is None and (
            self._head_open or (idle_before and not self._in_message and not self._begun_in_read)
        ):
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)
        if not self._head_open:
            return
        # An open head owns the whole read when it began in an earlier read, or when it
        # is the only message begun in this read on a connection idle before it.
        if self._begun_in_read == 0 or (self._begun_in_read == 1 and idle_before):
            self._head_bytes += len(data)
            if self._head_bytes > self.head_limit:
                self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = True
        self._head_open = True
        self._head_bytes = 0
        self._begun_in_read += 1

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._stop_head_timer()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.head_limit:
            self._head_refused = True
            # uvicorn turns a callback's exception into its 400 path, answered below.
            raise HeadTooLarge
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._head_refused:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        self._head_refused = True
        self._stop_head_timer()
        _log.warning("request head over %d bytes refused", self.head_limit)
        if not self.transport.is_closing():
            self.transport.write(_REFUSAL)
            self.transport.close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        self._head_refused = True  # whatever arrives from now on is not parsed
        _log.info("request head not complete within %g s; connection closed", self.head_timeout)
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head stalled behind a response still being sent: no 408 in the
            # middle of that response; the connection closes once it is complete.
            self.cycle.keep_alive = False
            return
        self.transport.write(_TIMEOUT)
        self.transport.close()
