"""The rules of RFC 8628 device authorizations, pure: user codes (§6.1) and the judgement
of a device's poll (§3.5). The store keeps the records and offers compare-and-swaps; the
grant and the verification page apply these rules.

User codes are 8 characters of the RFC's base-20 alphabet (no vowels, so no words; no
digits, so nothing to confuse with letters), shown as `XXXX-XXXX`, about 34 bits: enough
with a 10 minute lifetime and wrong guesses throttled per address. People may type them in
lower case, without the dash, or with spaces.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from enum import StrEnum

from broker.store import DeviceCodeRecord
from broker.tokens.secrets import sha256_b64

USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
SLOW_DOWN_STEP = 5
"""Seconds added to a device's interval at each `slow_down` (RFC 8628 §3.5)."""

PURGE_AFTER = timedelta(hours=1)
"""A device record is kept this long after it expired, so a late poll gets
`expired_token` rather than `invalid_grant`."""


def new_user_code() -> str:
    """A fresh user code, canonical form (8 letters, no dash)."""
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def new_device_code() -> str:
    return secrets.token_urlsafe(32)


def normalize_user_code(text: str | None) -> str | None:
    """The canonical form of what a person typed (case, dashes and spaces ignored), or
    None if it cannot be a user code."""
    if not text or len(text) > 64:
        return None
    canonical = "".join(ch for ch in text.upper() if ch not in " -\t")
    if len(canonical) != USER_CODE_LENGTH or any(c not in USER_CODE_ALPHABET for c in canonical):
        return None
    return canonical


def display_user_code(canonical: str) -> str:
    """`XXXX-XXXX`, as devices show it and the page compares it."""
    half = USER_CODE_LENGTH // 2
    return f"{canonical[:half]}-{canonical[half:]}"


def user_code_hash(canonical: str) -> str:
    return sha256_b64("user-code:" + canonical)


def device_code_hash(device_code: str) -> str:
    return sha256_b64("device-code:" + device_code)


class PollVerdict(StrEnum):
    EXPIRED = "expired_token"
    DENIED = "access_denied"
    USED = "used"
    APPROVED = "approved"
    SLOW_DOWN = "slow_down"
    PENDING = "authorization_pending"


def judge_poll(record: DeviceCodeRecord, now: datetime) -> tuple[PollVerdict, int]:
    """What a device's poll gets, and the interval it must keep from now on. Expiry comes
    first; a decision is answered at any pace; an undecided poll sooner than `interval`
    after the previous one is `slow_down` and adds `SLOW_DOWN_STEP` (§3.5)."""
    if now >= record.expires_at:
        return PollVerdict.EXPIRED, record.interval
    if record.status == "denied":
        return PollVerdict.DENIED, record.interval
    if record.status == "used":
        return PollVerdict.USED, record.interval
    if record.status == "approved":
        return PollVerdict.APPROVED, record.interval
    last = record.last_poll_at
    if last is not None and now - last < timedelta(seconds=record.interval):
        return PollVerdict.SLOW_DOWN, record.interval + SLOW_DOWN_STEP
    return PollVerdict.PENDING, record.interval
