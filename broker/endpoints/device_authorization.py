"""The device authorization endpoint, `POST /device_authorization` (RFC 8628 §3.1-§3.2).

Authlib's `DeviceAuthorizationEndpoint` keeps the shape (client authentication, the
response fields); the broker supplies the codes and their storage: a device code and a
user code (§6.1, `broker.tokens.device`) stored only as hashes, the client's scope checked
as at the token endpoint, the lifetime and polling interval from the settings.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2.rfc6749 import UnauthorizedClientError
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE, DeviceAuthorizationEndpoint

from broker.components import Components
from broker.endpoints.revocation import authenticate_401
from broker.events import audit
from broker.grants import DEFAULT_SCOPE, TOKEN_HEADERS, resolve_scope, user_scopes
from broker.store import AlreadyExists, DeviceCodeRecord
from broker.tokens import device

VERIFICATION_PATH = "/device"


class BrokerDeviceAuthorizationEndpoint(DeviceAuthorizationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post"]

    def authenticate_client(self, request: Any) -> Any:
        request.client = client = authenticate_401(self, request)
        if not client.check_grant_type(DEVICE_CODE_GRANT_TYPE):
            raise UnauthorizedClientError("This client may not use the device authorization grant.")
        return client

    def get_verification_uri(self) -> str:
        parts: Components = self.server.components
        return parts.issuer + VERIFICATION_PATH

    def create_endpoint_response(self, request: Any) -> tuple[int, dict[str, Any], list[Any]]:
        client = self.authenticate_client(request)
        # A person's grant: never the admin right, even for a client that holds it.
        scope = resolve_scope(
            request.payload.scope, user_scopes(client.record.scopes), DEFAULT_SCOPE
        )
        parts: Components = self.server.components
        settings = parts.settings
        now = parts.now()
        expires = now + timedelta(seconds=settings.device_code_ttl)
        for _attempt in range(8):
            device_code, user_code = device.new_device_code(), device.new_user_code()
            try:
                parts.store.create_device_code(
                    DeviceCodeRecord(
                        device_code_hash=device.device_code_hash(device_code),
                        user_code_hash=device.user_code_hash(user_code),
                        client_id=client.client_id,
                        scope=scope,
                        created_at=now,
                        expires_at=expires,
                        interval=settings.device_poll_interval,
                        purge_at=expires + device.PURGE_AFTER,
                    )
                )
                break
            except AlreadyExists:  # a user code still held by another (34 bits): draw again
                continue
        else:  # pragma: no cover - eight collisions in a row
            raise RuntimeError("could not draw a free user code")
        shown = device.display_user_code(user_code)
        uri = self.get_verification_uri()
        audit("device_authorization", client_id=client.client_id, ip=request.client_ip)
        body = {
            "device_code": device_code,
            "user_code": shown,
            "verification_uri": uri,
            "verification_uri_complete": f"{uri}?{urlencode({'user_code': shown})}",
            "expires_in": settings.device_code_ttl,
            "interval": settings.device_poll_interval,
        }
        return 200, body, TOKEN_HEADERS
