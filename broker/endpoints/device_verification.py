"""The verification side of a device authorization (RFC 8628 §3.3), framework-free: find a
pending authorization by the user code a person typed (or followed a link with), and record
their decision, once.

Wrong user codes are throttled per client address (store counters, so every process sees
them): a 34-bit code alone must not be guessable. A code arriving in a link
(`verification_uri_complete`) is never approved by following it: the page shows it for the
person to compare with their device, and only their explicit decision (a CSRF-protected
POST) goes here (§5.4, remote phishing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from broker.components import Components
from broker.errors import TooManyRequestsError
from broker.events import audit
from broker.store import ClientRecord, DeviceCodeRecord, SessionRecord
from broker.tokens.device import display_user_code, normalize_user_code, user_code_hash


class UnknownUserCode(Exception):
    """Malformed, unknown, expired or already decided: the person checks their device."""


@dataclass(frozen=True, slots=True)
class PendingDevice:
    """A device waiting for a person's decision."""

    record: DeviceCodeRecord
    client: ClientRecord
    user_code: str
    """As devices show it: `XXXX-XXXX`."""

    @property
    def scopes(self) -> list[str]:
        return self.record.scope.split()


def _guess_key(ip: str) -> str:
    return "device-code-fail:ip:" + ip


def lookup(parts: Components, typed: str | None, ip: str | None) -> PendingDevice:
    """The pending authorization a typed user code names. Raises TooManyRequestsError when
    this address guessed wrong too often, UnknownUserCode otherwise (counted as a wrong
    guess when no authorization has the code at all)."""
    window = timedelta(seconds=parts.settings.login_failure_window)
    now = parts.now()
    limit = parts.settings.device_max_wrong_codes_per_ip
    guesses = parts.store.read_counter(_guess_key(ip), now, window) if ip else None
    if guesses is not None and guesses.count >= limit:
        retry = parts.settings.login_failure_window
        raise TooManyRequestsError(
            f"Too many wrong codes from this address. Wait {max(1, retry // 60)} minutes "
            "and check the code on your device.",
            retry_after=retry,
        )
    canonical = normalize_user_code(typed)
    record = (
        parts.store.get_device_code_by_user_code(user_code_hash(canonical)) if canonical else None
    )
    if record is None:
        if ip:
            parts.store.reserve(_guess_key(ip), now, window, limit)
        raise UnknownUserCode("no device is waiting with this code")
    client = parts.store.get_client(record.client_id)
    if record.status != "pending" or now >= record.expires_at or client is None:
        raise UnknownUserCode("this code has expired or was already used")
    assert canonical is not None
    return PendingDevice(record, client, display_user_code(canonical))


def decide(
    parts: Components,
    typed: str | None,
    *,
    approve: bool,
    session: SessionRecord,
    ip: str | None,
) -> PendingDevice:
    """Record the signed-in person's decision for the code, once (a compare-and-swap)."""
    pending = lookup(parts, typed, ip)
    status = "approved" if approve else "denied"
    if not parts.store.decide_device_code(
        pending.record.user_code_hash, status, session.sid, parts.now()
    ):
        raise UnknownUserCode("this code was already used")
    audit(
        "device_approved" if approve else "device_denied",
        client_id=pending.client.client_id,
        user_id=session.user_id,
        sid=session.sid,
        ip=ip,
    )
    return pending
