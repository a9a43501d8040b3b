"""Helpers for the browser-flow HTTP tests: PKCE pairs, authorization requests, and a
login that drives the hosted form the way a browser does (GET, read the hidden fields,
POST), with httpx keeping the cookies."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock

REDIRECT = "http://127.0.0.1:53682/callback"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.decode().rstrip("=")


@dataclass
class Flow:
    """One authorization request's parameters and its PKCE verifier."""

    client_id: str = "dna-frontend"
    redirect_uri: str = REDIRECT
    scope: str = "openid profile email"
    state: str = "st-123"
    nonce: str = "n-456"
    verifier: str = ""
    challenge: str = ""

    def __post_init__(self) -> None:
        if not self.verifier:
            self.verifier, self.challenge = pkce_pair()

    def params(self, **overrides: Any) -> dict[str, str]:
        params = {
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": self.scope,
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
        }
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}

    def redeem(
        self, http: httpx.Client, code: str | None, **overrides: str | None
    ) -> httpx.Response:
        data = {
            "grant_type": "authorization_code",
            "client_id": self.client_id,
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": self.verifier,
            **overrides,
        }
        return http.post("/token", data={k: v for k, v in data.items() if v is not None})


def hidden_fields(html: str) -> dict[str, str]:
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html)
    return {name: unescape(value) for name, value in fields}


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def submit_login(
    http: httpx.Client,
    page: httpx.Response,
    username: str,
    password: str,
    path: str = "/authorize",
) -> httpx.Response:
    fields = hidden_fields(page.text)
    fields.update(username=username, password=password)
    return http.post(path, data=fields)


def login_code(
    http: httpx.Client, flow: Flow, username: str = "alice", password: str | None = None
) -> str:
    page = http.get("/authorize", params=flow.params())
    assert page.status_code == 200, page.text
    done = submit_login(http, page, username, password or f"{username}-pw")
    assert done.status_code == 302, done.text
    query = query_of(done.headers["location"])
    assert query["state"] == flow.state
    return query["code"]


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def running(tmp_path: Path, clock: MovableClock) -> Iterator[RunningBroker]:
    with broker_with_emulator(tmp_path, clock) as (broker, _emu, _site):
        yield broker


@pytest.fixture
def http(running: RunningBroker) -> Iterator[httpx.Client]:
    with running.client() as client:
        yield client
