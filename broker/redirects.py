"""Redirect URI matching: exact string match (RFC 6749 §3.1.2.3, RFC 9700 §4.1.3), except the
port of a registered loopback URI, which may be any (RFC 8252 §7.3). A native app's
private-use URI (RFC 8252 §7.1, `com.example.app:/callback`, no host) matches exactly.

A candidate with userinfo, a fragment, or anything not byte-identical apart from the
loopback port is refused; hosts are compared exactly (no case folding, no suffix games).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


def split_uri(uri: str) -> SplitResult | None:
    """Parsed URI, or None when it is malformed or carries userinfo or a fragment."""
    if not uri or len(uri) > 2048 or any(c in uri for c in "\\ \t\r\n"):
        return None
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return None
    if parts.fragment or "@" in parts.netloc or not parts.scheme or not parts.netloc:
        return None
    return parts


def host_of(parts: SplitResult) -> str:
    """The host as written (IPv6 in brackets), without the port."""
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    if parts.netloc.startswith("[") and "]:" in parts.netloc:
        host = parts.netloc.split("]:", 1)[0] + "]"
    return host


def is_loopback(uri: str) -> bool:
    parts = split_uri(uri)
    return parts is not None and parts.scheme == "http" and host_of(parts) in LOOPBACK_HOSTS


def private_use_scheme(uri: str) -> str | None:
    """The scheme of a native app's private-use redirect URI (RFC 8252 §7.1: a reverse
    domain name, one slash, no host), else None."""
    if not uri or len(uri) > 2048 or any(c in uri for c in "\\ \t\r\n#"):
        return None
    scheme, sep, rest = uri.partition(":")
    if not sep or "." not in scheme or not rest.startswith("/") or rest.startswith("//"):
        return None
    if not scheme.isascii() or not scheme[:1].isalpha():
        return None
    if not all(c.isalnum() or c in "+.-" for c in scheme):
        return None
    return scheme


def redirect_uri_allowed(candidate: str, registered: Iterable[str]) -> bool:
    cand = split_uri(candidate)
    if cand is None:
        return private_use_scheme(candidate) is not None and candidate in tuple(registered)
    for reg_uri in registered:
        if candidate == reg_uri:
            return True
        reg = split_uri(reg_uri)
        if reg is None or reg.scheme != "http" or host_of(reg) not in LOOPBACK_HOSTS:
            continue
        if reg.port is not None or not candidate.startswith("http://"):
            continue
        # Byte-exact apart from the port: drop the candidate's port and compare strings
        # (comparing urlsplit parts would let `HTTP://` or a bare trailing `?` through).
        host = host_of(cand)
        rest = candidate[len("http://") + len(cand.netloc) :]
        if host == host_of(reg) and f"http://{host}{rest}" == reg_uri:
            return True
    return False


def origin_of(uri: str) -> str | None:
    """`scheme://host[:port]` of a URI (the CORS origin a page at that URI sends)."""
    parts = split_uri(uri)
    if parts is None:
        return None
    return f"{parts.scheme}://{parts.netloc}"
