"""The client address of a request, decided once, before anything reads it.

Throttling, audit events and access logs all read the ASGI `client` of the request; this
middleware is the only thing that may change it. It does so only when the TCP peer is a
listed proxy (`BROKER_TRUSTED_PROXIES`), from the one header those proxies write
(`BROKER_FORWARDED_HEADER`: `X-Forwarded-For`, or `Forwarded` of RFC 7239 §4). Each proxy
appends the address it received the request from, so the right-most address that is not
itself a trusted proxy is the first one nobody we trust could have been lied to about;
everything left of it is whatever the client chose to send. From any other peer the
headers are ignored, so rotating them changes nothing. uvicorn's own forwarded-header
handling is switched off (broker/serving.py), so it cannot decide otherwise first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it: bare, `[v6]`, `[v6]:port` or `v4:port`."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def forwarded_for_values(values: Sequence[str]) -> list[str]:
    """The `for=` parameters of RFC 7239 `Forwarded` header fields, in order."""
    found = []
    for field in values:
        for element in field.split(","):
            for pair in element.split(";"):
                name, _, value = pair.partition("=")
                if name.strip().lower() == "for":
                    found.append(value.strip())
    return found


def x_forwarded_for_values(values: Sequence[str]) -> list[str]:
    return [item.strip() for field in values for item in field.split(",") if item.strip()]


class TrustedProxies:
    def __init__(self, entries: Iterable[str], header: str = "x-forwarded-for") -> None:
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in entries]
        self.header = header.lower().encode("latin-1")
        self._read = forwarded_for_values if header == "forwarded" else x_forwarded_for_values

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: IPAddress | None) -> bool:
        return address is not None and any(address in net for net in self.networks)

    def client_address(self, peer: str, headers: Iterable[tuple[bytes, bytes]]) -> str:
        """The client's address for a request from `peer` carrying `headers`."""
        if not self.trusts(_parse_address(peer)):
            return peer
        fields = [v.decode("latin-1") for k, v in headers if k.lower() == self.header]
        hops = self._read(fields)
        if not hops:
            return peer
        for hop in reversed(hops):
            address = _parse_address(hop)
            if address is None:
                # `unknown`, an obfuscated name or garbage written by a proxy we trust:
                # no address to attribute, so keep the proxy's own (never a made-up one).
                return peer
            if not self.trusts(address):
                return str(address)
        # Every hop is a trusted proxy: the left-most is the origin.
        return str(_parse_address(hops[0]))


class ProxyHeadersMiddleware:
    """Sets `scope["client"]` from the trusted proxies' header (outermost middleware)."""

    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if self.proxies and client and scope["type"] in ("http", "websocket"):
            address = self.proxies.client_address(client[0], scope.get("headers", []))
            if address != client[0]:
                scope["client"] = (address, 0)
        await self.app(scope, receive, send)
