"""RFC 6238 time-based one-time passwords, as ShotGrid's two-factor authentication uses them.

HMAC-SHA-1 over a 30 s time step, 6 digits (RFC 6238 §4, with RFC 4226 §5.3's dynamic
truncation); codes one step either side of now are accepted to absorb clock drift, as
RFC 6238 §5.2 recommends. Standard library only: the tests generate codes with `pyotp`,
so two independent implementations check each other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from datetime import datetime

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1


class InvalidSecret(ValueError):
    """A TOTP secret that is not RFC 4648 base32."""


def decode_secret(secret: str) -> bytes:
    """The key bytes of a base32 secret (spaces and case ignored, padding optional)."""
    text = secret.replace(" ", "").upper()
    if not text:
        raise InvalidSecret("empty TOTP secret")
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except binascii.Error as exc:
        raise InvalidSecret("TOTP secret is not base32") from exc


def code_at(key: bytes, step: int) -> str:
    """The code for time step `step` (RFC 4226 HOTP with the step as counter)."""
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**DIGITS).zfill(DIGITS)


def step_of(now: datetime) -> int:
    return int(now.timestamp()) // STEP_SECONDS


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step whose code `code` is (within ±1 step of now), or None.

    Every candidate is compared in constant time, so a wrong code costs the same whichever
    digits it gets right.
    """
    candidate = code.strip().replace(" ", "")
    if len(candidate) != DIGITS or not candidate.isdigit():
        return None
    key = decode_secret(secret)
    current = step_of(now)
    found: int | None = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(code_at(key, step), candidate) and found is None:
            found = step
    return found
