"""Inputs the fuzzers found that used to end in a 500, kept as a table."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    tmp: Path = tmp_path_factory.mktemp("regressions")
    with broker_with_emulator(tmp, MovableClock()) as (running, _emu, _site):
        yield running


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        # A repeated parameter whose name is not ASCII (Authlib refused the description).
        ("%E1%9A%8F=1&%E1%9A%8F=2&grant_type=password", {}, 400, "invalid_request"),
        # An unsupported grant_type full of non-ASCII (echoed in the description).
        ("grant_type=%E1%9A%8F%22%5C&client_id=dna-cli", {}, 400, "unsupported_grant_type"),
        # Basic credentials with non-ASCII base64 text.
        (
            "grant_type=client_credentials",
            {"Authorization": b"Basic \xff\xfe\xfd"},
            401,
            "invalid_client",
        ),
        # Basic credentials decoding to bytes that are not UTF-8.
        (
            "grant_type=client_credentials",
            {"Authorization": b"Basic " + base64.b64encode(b"\xff\xfe:\xfd")},
            401,
            "invalid_client",
        ),
        # A JWT-shaped refresh token whose header is 3000 nested JSON arrays.
        (
            "grant_type=refresh_token&client_id=dna-cli&refresh_token="
            + base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).decode().rstrip("=")
            + ".e30.c2ln",
            {},
            400,
            "invalid_grant",
        ),
    ],
)
def test_no_500(
    broker: RunningBroker, body: str, headers: dict[str, bytes], status: int, error: str
) -> None:
    response = httpx.post(f"{broker.url}/token", content=body, headers={**FORM, **headers})
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"] == error
    description = payload.get("error_description", "")
    assert all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in description)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
