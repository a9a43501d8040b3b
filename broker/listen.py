"""Listening sockets bound before a server starts, so a busy port is one clear line (the
contract's rule for every command) instead of a uvicorn traceback, and a printed URL is
true the moment it appears."""

from __future__ import annotations

import socket


class ListenError(Exception):
    """The address cannot be listened on; the message names it."""


def listen_socket(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def check_listen(host: str, port: int) -> None:
    """Raise ListenError unless `host:port` can be listened on now. For servers that bind
    their own socket (uvicorn's workers): checked before they start, so a busy port is one
    line rather than an error logged after "Application startup complete"."""
    listen_socket(host, port).close()
