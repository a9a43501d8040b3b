"""Device authorization grant (RFC 8628 §3.4-§3.5): command-line tools and DCC plug-ins
sign a person in without ever seeing a password.

The device polls `/token` with its device code while the person approves or denies on the
verification page (`broker/http/device.py`). Each poll is judged by the pure rules of
`broker.tokens.device` (expiry first, then the person's decision, then the pace) and
recorded with a compare-and-swap on the poll time, so `slow_down` holds across processes;
an approval is redeemed by a compare-and-swap too (single use). The tokens belong to a new
session of the device (`auth_method` `device`, the device's address and user agent) for the
person who approved: as for the other grants, a refresh token if the client may refresh
and an ID token with `openid`.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import (
    AccessDeniedError,
    InvalidGrantError,
    InvalidRequestError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc8628 import (
    AuthorizationPendingError,
    DeviceCodeGrant,
    ExpiredTokenError,
    SlowDownError,
)

from broker.components import Components
from broker.endpoints.device_authorization import BrokerDeviceAuthorizationEndpoint
from broker.events import audit
from broker.grants import TOKEN_HEADERS, GrantSpec
from broker.store import DeviceCodeRecord, SessionRecord
from broker.tokens.device import PollVerdict, device_code_hash, judge_poll
from broker.upstream import Identity


class BrokerDeviceCodeGrant(DeviceCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post"]

    record: DeviceCodeRecord
    approver: SessionRecord

    def validate_token_request(self) -> None:
        # Authlib's own order reads the device code before authenticating the client and
        # answers an unknown code with invalid_request; RFC 6749 §5.2 calls an invalid
        # grant `invalid_grant`, and the client comes first here as in every grant.
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("This client may not use the device authorization grant.")
        code = self.request.form.get("device_code")
        if not code:
            raise InvalidRequestError("Missing 'device_code' in request.")
        parts: Components = self.server.components
        key = device_code_hash(code) if len(code) <= 200 else ""
        record = parts.store.get_device_code(key) if key else None
        if record is None or record.client_id != client.client_id:
            raise InvalidGrantError("Unknown 'device_code': start the sign-in again.")
        self.request.client = client
        self.record, self.approver = self._poll(parts, key, record)

    def _poll(
        self, parts: Components, key: str, record: DeviceCodeRecord
    ) -> tuple[DeviceCodeRecord, SessionRecord]:
        """Judge the poll and record it; a lost compare-and-swap (a concurrent poll, a
        concurrent redemption) is judged again on what the store now holds."""
        for _attempt in range(8):
            now = parts.now()
            verdict, interval = judge_poll(record, now)
            if verdict is PollVerdict.EXPIRED:
                raise ExpiredTokenError("The device code has expired: start the sign-in again.")
            if verdict is PollVerdict.DENIED:
                raise AccessDeniedError("The sign-in was denied on the verification page.")
            if verdict is PollVerdict.USED:
                raise InvalidGrantError("This device code was already used.")
            if verdict is PollVerdict.APPROVED:
                approver = parts.store.get_session(record.sid or "")
                if not parts.sessions.live(approver):
                    raise AccessDeniedError(
                        "The sign-in that approved this device has ended: start again."
                    )
                assert approver is not None
                if parts.store.redeem_device_code(key, now):
                    return record, approver
            elif parts.store.touch_device_poll(key, record.last_poll_at, now, interval):
                if verdict is PollVerdict.SLOW_DOWN:
                    raise SlowDownError(f"Polling too fast: wait {interval} s between polls.")
                raise AuthorizationPendingError("Waiting for the person to approve.")
            again = parts.store.get_device_code(key)
            if again is None:
                raise InvalidGrantError("Unknown 'device_code': start the sign-in again.")
            record = again
        raise InvalidGrantError("The device code is being used elsewhere.")

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        parts: Components = self.server.components
        client, approver = self.request.client, self.approver
        session = parts.sessions.new_session(
            Identity(
                user_id=approver.user_id,
                login=approver.login,
                email=approver.email,
                name=approver.name,
                active=True,
            ),
            auth_method="device",
            client_ip=self.request.client_ip,
            user_agent=self.request.headers.get("user-agent"),
            auth_time=approver.auth_time,
            upstream_sid=approver.upstream_sid or approver.sid,
            client_id=client.client_id,
        )
        family = refresh = None
        scope = self.record.scope
        if client.check_grant_type("refresh_token"):
            family, refresh = parts.sessions.start_family(session, client.client_id, scope)
        body = parts.minter.token_response(
            session, client.client_id, scope, family=family, refresh=refresh
        )
        audit(
            "device_token",
            client_id=client.client_id,
            user_id=session.user_id,
            sid=session.sid,
            ip=self.request.client_ip,
        )
        return 200, body, TOKEN_HEADERS


SPEC = GrantSpec(
    BrokerDeviceCodeGrant,
    parameters=("device_code",),
    metadata=(("device_authorization_endpoint", "/device_authorization"),),
    endpoints=(("/device_authorization", BrokerDeviceAuthorizationEndpoint),),
)
