"""Client-secret hashing and constant-time checks.

Client secrets are random and long, not passwords: a salted SHA-256 is the right cost
(a slow password hash at every token request is what capped Hydra at ~540 req/s), and the
comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

_SCHEME = "sha256"


def hash_client_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.sha256(salt + secret.encode()).hexdigest()
    return f"{_SCHEME}${base64.urlsafe_b64encode(salt).decode()}${digest}"


def check_client_secret(secret: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, salt_b64, digest = stored.split("$", 2)
        salt = base64.urlsafe_b64decode(salt_b64)
    except ValueError:
        return False
    if scheme != _SCHEME:
        return False
    candidate = hashlib.sha256(salt + secret.encode()).hexdigest()
    return hmac.compare_digest(candidate, digest)


def new_token_id(nbytes: int = 16) -> str:
    """A random identifier (jti, sid, family id): 128 bits, base64url."""
    return secrets.token_urlsafe(nbytes)


def sha256_b64(value: str) -> str:
    """Lookup hash for codes and cookies: the store never sees their values."""
    return base64.urlsafe_b64encode(hashlib.sha256(value.encode()).digest()).decode().rstrip("=")
