"""Helpers and fixtures for the service endpoints (token exchange, introspection,
revocation, client credentials) against a real broker + emulator."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.store import ClientRecord
from broker.tokens.secrets import hash_client_secret
from shotgrid_emulator import ShotGridEmulator
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock

BACKEND = ("dna-backend", "dna-backend-secret")
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SHOTGRID_TOKEN_TYPE = "urn:shotgrid:params:oauth:token-type:access_token"


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def env(tmp_path: Path, clock: MovableClock) -> Iterator[tuple[RunningBroker, ShotGridEmulator]]:
    with broker_with_emulator(tmp_path, clock) as (running, emu, _site):
        yield running, emu


@pytest.fixture
def broker(env: tuple[RunningBroker, ShotGridEmulator]) -> RunningBroker:
    return env[0]


@pytest.fixture
def http(broker: RunningBroker) -> Iterator[httpx.Client]:
    with broker.client() as client:
        yield client


def claims_of(token: str) -> dict[str, Any]:
    """Unverified payload (the tests that need verification do it with the JWKS)."""
    part = token.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


def header_of(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


def login(
    running: RunningBroker, http: httpx.Client, user: str = "alice", **extra: str
) -> dict[str, Any]:
    response = running.password_grant(http, user, **extra)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def exchange(
    http: httpx.Client,
    subject: str,
    auth: tuple[str, str] | None = BACKEND,
    **extra: str,
) -> httpx.Response:
    data = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        **extra,
    }
    return http.post("/token", data=data, auth=auth)


def introspect(
    http: httpx.Client,
    token: str,
    auth: tuple[str, str] | None = BACKEND,
    headers: dict[str, str] | None = None,
    **extra: str,
) -> httpx.Response:
    return http.post("/introspect", data={"token": token, **extra}, auth=auth, headers=headers)


def is_active(http: httpx.Client, token: str) -> bool:
    response = introspect(http, token)
    assert response.status_code == 200, response.text
    return bool(response.json()["active"])


def revoke(
    http: httpx.Client,
    token: str,
    client_id: str = "dna-cli",
    auth: tuple[str, str] | None = None,
    **extra: str,
) -> httpx.Response:
    data = {"token": token, **extra}
    if auth is None:
        data["client_id"] = client_id
    return http.post("/revoke", data=data, auth=auth)


def add_confidential_client(
    running: RunningBroker, client_id: str, secret: str, **fields: Any
) -> None:
    record = ClientRecord(
        client_id=client_id,
        public=False,
        secret_hash=hash_client_secret(secret),
        **fields,
    )
    running.broker.store.put_client(record)
