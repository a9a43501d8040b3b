"""The pure rules of device authorizations (RFC 8628): user codes (§6.1) and the
judgement of a device's poll (§3.5), and the two-factor code's normal form."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from broker.signin.twofactor import MalformedCode, normalize_code
from broker.store import DeviceCodeRecord
from broker.tokens.device import (
    USER_CODE_ALPHABET,
    PollVerdict,
    display_user_code,
    judge_poll,
    new_user_code,
    normalize_user_code,
    user_code_hash,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
S = timedelta(seconds=1)
RECORD = DeviceCodeRecord(
    device_code_hash="d",
    user_code_hash="u",
    client_id="cli",
    scope="openid",
    created_at=NOW,
    expires_at=NOW + 600 * S,
    interval=5,
    purge_at=NOW + 3600 * S,
)


def test_new_user_codes_use_the_base20_alphabet() -> None:
    codes = {new_user_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert len(code) == 8 and set(code) <= set(USER_CODE_ALPHABET)
        assert normalize_user_code(display_user_code(code)) == code


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("WDJB-MJHT", "WDJBMJHT"),
        ("wdjb-mjht", "WDJBMJHT"),
        (" wdjb mjht ", "WDJBMJHT"),
        ("WDJBMJHT", "WDJBMJHT"),
        ("W-D-J-B-M-J-H-T", "WDJBMJHT"),
        ("WDJB-MJH", None),  # too short
        ("WDJB-MJHTX", None),  # too long
        ("AEIO-UBCD", None),  # vowels are not in the alphabet
        ("1234-5678", None),
        ("", None),
        (None, None),
        ("W" * 100, None),
    ],
)
def test_normalize_user_code(typed: str | None, canonical: str | None) -> None:
    assert normalize_user_code(typed) == canonical


def test_user_code_hash_ignores_how_it_was_typed() -> None:
    a, b = normalize_user_code("wdjb mjht"), normalize_user_code("WDJB-MJHT")
    assert a is not None and b is not None and user_code_hash(a) == user_code_hash(b)
    assert user_code_hash(a) != user_code_hash("WDJBMJHB")


@pytest.mark.parametrize(
    ("changes", "at", "verdict", "interval"),
    [
        ({}, NOW, PollVerdict.PENDING, 5),
        ({"last_poll_at": NOW}, NOW + 5 * S, PollVerdict.PENDING, 5),
        ({"last_poll_at": NOW}, NOW + 4 * S, PollVerdict.SLOW_DOWN, 10),
        ({"last_poll_at": NOW, "interval": 10}, NOW + 9 * S, PollVerdict.SLOW_DOWN, 15),
        ({"status": "approved", "last_poll_at": NOW}, NOW + S, PollVerdict.APPROVED, 5),
        ({"status": "denied"}, NOW, PollVerdict.DENIED, 5),
        ({"status": "used"}, NOW, PollVerdict.USED, 5),
        ({"status": "approved"}, NOW + 600 * S, PollVerdict.EXPIRED, 5),
        ({}, NOW + 601 * S, PollVerdict.EXPIRED, 5),
    ],
)
def test_judge_poll(
    changes: dict[str, object], at: datetime, verdict: PollVerdict, interval: int
) -> None:
    assert judge_poll(replace(RECORD, **changes), at) == (verdict, interval)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("typed", "digits"),
    [("123456", "123456"), (" 123 456 ", "123456"), ("123-456", "123456")],
)
def test_two_factor_codes(typed: str, digits: str) -> None:
    assert normalize_code(typed) == digits


FULLWIDTH = "".join(chr(0xFF10 + d) for d in (1, 2, 3, 4, 5, 6))  # isdigit(), not ASCII


@pytest.mark.parametrize("typed", ["12345", "1234567", "12a456", "", FULLWIDTH])
def test_malformed_two_factor_codes(typed: str) -> None:
    with pytest.raises(MalformedCode):
        normalize_code(typed)
