"""The emulator's stdlib RFC 6238 verifier against the RFC's own vectors and pyotp."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from shotgrid_emulator import totp
from tests.support.emulator import DemoTOTP

# RFC 6238 Appendix B, SHA-1 key "12345678901234567890": the 8-digit values' last 6 digits
# are the 6-digit codes (10**6 divides 10**8).
RFC_KEY = b"12345678901234567890"
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("unix_time", "eight_digits"), RFC_VECTORS)
def test_rfc_6238_vectors(unix_time: int, eight_digits: str) -> None:
    assert totp.code_at(RFC_KEY, unix_time // 30) == eight_digits[-6:]


@pytest.mark.parametrize("secret", ["JBSWY3DPEHPK3PXP", "jbsw y3dp ehpk 3pxp", "GEZDGNBVGY3TQOJQ"])
def test_agrees_with_pyotp_across_steps(secret: str) -> None:
    reference = DemoTOTP(secret.replace(" ", "").upper())
    for unix_time in range(1_700_000_000, 1_700_000_000 + 30 * 40, 30):
        now = datetime.fromtimestamp(unix_time, UTC)
        code = reference.at(unix_time)
        assert totp.matching_step(secret, code, now) == unix_time // 30


def test_window_is_one_step_either_side() -> None:
    secret = base64.b32encode(RFC_KEY).decode()
    now = datetime.fromtimestamp(1_700_000_015, UTC)
    step = 1_700_000_015 // 30
    key = totp.decode_secret(secret)
    for offset, accepted in [(-2, False), (-1, True), (0, True), (1, True), (2, False)]:
        found = totp.matching_step(secret, totp.code_at(key, step + offset), now)
        assert (found == step + offset) is accepted


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12345a", "abcdef"])
def test_malformed_codes_never_match(code: str) -> None:
    assert totp.matching_step("JBSWY3DPEHPK3PXP", code, datetime.now(UTC)) is None


@pytest.mark.parametrize("secret", ["", "not base32!", "JBSWY3DPEHPK3PX1"])
def test_bad_secrets_are_refused(secret: str) -> None:
    with pytest.raises(totp.InvalidSecret):
        totp.decode_secret(secret)
