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
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_LIMIT_BYTES = 16 * 1024
"""Largest request head (request target plus header names and values) accepted."""

_log = logging.getLogger("broker.http.protocol")

_REFUSAL = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 34\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Request header fields too large.\r\n"
)


class HeadTooLarge(Exception):
    """Raised inside the parser callback: httptools then stops parsing this connection."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    head_limit = HEAD_LIMIT_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_message = False
        self._head_open = False
        self._head_bytes = 0
        self._begun_in_read = 0
        self._head_refused = False

    def data_received(self, data: bytes) -> None:
        if self._head_refused:
            return
        idle_before = not self._in_message
        self._begun_in_read = 0
        super().data_received(data)
        if not self._head_open or self._head_refused:
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
        _log.warning("request head over %d bytes refused", self.head_limit)
        if not self.transport.is_closing():
            self.transport.write(_REFUSAL)
            self.transport.close()
