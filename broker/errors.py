"""OAuth2 errors Authlib lacks, as classes carrying their RFC code and HTTP status."""

from __future__ import annotations

from typing import Any

from authlib.oauth2 import OAuth2Error


class TemporarilyUnavailableError(OAuth2Error):  # type: ignore[misc]
    """RFC 6749 §4.1.2.1 `temporarily_unavailable`, as a 503 at the token endpoint too:
    ShotGrid or the store is down; nothing was written."""

    error = "temporarily_unavailable"
    status_code = 503

    def __init__(self, description: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(description=description)
        self.retry_after = retry_after

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = list(super().get_headers())
        if self.retry_after is not None:
            headers.append(("Retry-After", str(self.retry_after)))
        return headers


class TooManyRequestsError(OAuth2Error):  # type: ignore[misc]
    """Failed-login throttling: 429 with `Retry-After` (RFC 6585 §4), body in RFC 6749 §5.2
    form with error `invalid_grant` wrapped as `slow_down`-like advice in the description."""

    error = "invalid_request"
    status_code = 429

    def __init__(self, description: str, retry_after: int) -> None:
        super().__init__(description=description)
        self.retry_after = retry_after

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = list(super().get_headers())
        headers.append(("Retry-After", str(self.retry_after)))
        return headers


class InvalidTargetError(OAuth2Error):  # type: ignore[misc]
    """RFC 8693 §2.2.2 / RFC 8707 `invalid_target`."""

    error = "invalid_target"
    status_code = 400


def error_body(error: str, description: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error}
    if description:
        body["error_description"] = description
    return body


class UnsupportedTokenTypeError(OAuth2Error):  # type: ignore[misc]
    """RFC 7009 §2.2.1 `unsupported_token_type`, as the 400 of RFC 6749 §5.2 (Authlib's
    own class is a 401, which would tell a client its credentials failed)."""

    error = "unsupported_token_type"
    status_code = 400
