"""`broker_client.login` against a scripted authorization server under uvicorn: the device
flow's prompt and polling pace (interval, slow_down, back-off, denial, expiry,
cancellation), and the per-user token cache (mode 0600, one entry per issuer and client,
atomic, refresh on use, survives a new process, one refresh across racing processes).

The end-to-end flow against the real broker is in the broker's tests/e2e/test_device_login.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broker_client.login import (
    DeviceLogin,
    DevicePrompt,
    LoginCancelled,
    LoginDenied,
    LoginError,
    LoginExpired,
    LoginRequired,
)
from broker_client.tokencache import TokenCache, Tokens
from client_servers import serve
from client_support import FakeClock

CLIENT = "dna-cli"


@dataclass
class Script:
    """What the fake server answers, and what it saw."""

    polls: list[str] = field(default_factory=list)
    """Answers to device polls, in order: an OAuth error code, "ok", "503" or "html"."""
    interval: int | None = 5
    expires_in: int = 600
    refresh_error: str | None = None
    refresh_delay: float = 0.0
    seen_polls: int = 0
    refreshes: int = 0
    revoked: list[str] = field(default_factory=list)
    issued: int = 0


async def form_of(request: Request) -> dict[str, str]:
    return dict(parse_qsl((await request.body()).decode()))


def fake_server(script_holder: list[Script]) -> Starlette:
    def script() -> Script:
        return script_holder[0]

    async def metadata(request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "issuer": base,
                "token_endpoint": base + "/token",
                "device_authorization_endpoint": base + "/device_authorization",
                "revocation_endpoint": base + "/revoke",
            }
        )

    async def device_authorization(request: Request) -> Response:
        form = await form_of(request)
        assert form["client_id"] == CLIENT
        base = str(request.base_url).rstrip("/")
        body: dict[str, Any] = {
            "device_code": "dev-code-1",
            "user_code": "BCDF-GHJK",
            "verification_uri": base + "/device",
            "verification_uri_complete": base + "/device?user_code=BCDF-GHJK",
            "expires_in": script().expires_in,
        }
        if script().interval is not None:
            body["interval"] = script().interval
        return JSONResponse(body)

    def tokens(prefix: str) -> dict[str, Any]:
        s = script()
        s.issued += 1
        return {
            "access_token": f"{prefix}-at-{s.issued}",
            "refresh_token": f"{prefix}-rt-{s.issued}",
            "token_type": "Bearer",
            "expires_in": 600,
            "scope": "openid profile",
        }

    async def token(request: Request) -> Response:
        form = await form_of(request)
        s = script()
        if form["grant_type"] == "refresh_token":
            s.refreshes += 1
            if s.refresh_delay:
                await asyncio.sleep(s.refresh_delay)  # injected latency widens the race
            if s.refresh_error:
                return JSONResponse({"error": s.refresh_error}, status_code=400)
            return JSONResponse(tokens("refreshed"))
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:device_code"
        answer = s.polls[s.seen_polls] if s.seen_polls < len(s.polls) else "ok"
        s.seen_polls += 1
        if answer == "ok":
            return JSONResponse(tokens("device"))
        if answer == "503":
            return Response("<h1>down</h1>", status_code=503, media_type="text/html")
        return JSONResponse({"error": answer, "error_description": "scripted"}, status_code=400)

    async def revoke(request: Request) -> Response:
        script().revoked.append((await form_of(request))["token"])
        return Response(status_code=200)

    return Starlette(
        routes=[
            Route("/.well-known/oauth-authorization-server", metadata),
            Route("/device_authorization", device_authorization, methods=["POST"]),
            Route("/token", token, methods=["POST"]),
            Route("/revoke", revoke, methods=["POST"]),
        ]
    )


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[Script]]]:
    holder = [Script()]
    with serve(fake_server(holder)) as running:
        yield running.url, holder


@pytest.fixture
def script(server: tuple[str, list[Script]]) -> Script:
    server[1][0] = Script()
    return server[1][0]


@pytest.fixture
def issuer(server: tuple[str, list[Script]]) -> str:
    return server[0]


@pytest.fixture
def cache(tmp_path: Path) -> TokenCache:
    return TokenCache(tmp_path / "cache" / "tokens.json")


class Waits:
    """An injected `sleep` that records the waits and moves the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


def make(
    issuer: str, cache: TokenCache | None, **kw: Any
) -> tuple[DeviceLogin, Waits, list[DevicePrompt]]:
    clock = kw.pop("clock", None) or FakeClock()
    waits = Waits(clock)
    prompts: list[DevicePrompt] = []
    login = DeviceLogin(
        issuer, CLIENT, cache=cache, on_prompt=prompts.append, sleep=waits, clock=clock, **kw
    )
    return login, waits, prompts


def test_prompt_and_the_polling_pace(issuer: str, script: Script, cache: TokenCache) -> None:
    script.polls = ["authorization_pending", "slow_down", "authorization_pending", "slow_down"]
    login, waits, prompts = make(issuer, cache)
    with login:
        token = login.access_token()
    assert token == "device-at-1"
    (prompt,) = prompts
    assert prompt.user_code == "BCDF-GHJK" and prompt.verification_uri == issuer + "/device"
    assert "BCDF-GHJK" in prompt.text() and prompt.verification_uri in prompt.text()
    # 5 s, slow_down: +5 from then on, again +5.
    assert waits.waits == [5, 5, 10, 10, 15]
    assert script.seen_polls == 5


def test_interval_defaults_to_five_seconds(issuer: str, script: Script) -> None:
    script.interval = None
    script.polls = ["authorization_pending"]
    login, waits, _ = make(issuer, None)
    with login:
        login.access_token()
    assert waits.waits == [5, 5]


def test_unreachable_broker_backs_off(issuer: str, script: Script) -> None:
    script.polls = ["503", "503", "authorization_pending"]
    login, waits, _ = make(issuer, None)
    with login:
        assert login.access_token() == "device-at-1"
    assert waits.waits == [5, 10, 20, 5]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("access_denied", LoginDenied),
        ("expired_token", LoginExpired),
        ("invalid_grant", LoginError),
    ],
)
def test_refusals(
    issuer: str, script: Script, cache: TokenCache, answer: str, error: type[LoginError]
) -> None:
    script.polls = ["authorization_pending", answer]
    login, _, _ = make(issuer, cache)
    with login, pytest.raises(error) as info:
        login.access_token()
    assert info.value.error == answer
    assert cache.get(issuer, CLIENT) is None


def test_gives_up_when_the_code_expires(issuer: str, script: Script) -> None:
    script.expires_in = 12
    script.polls = ["authorization_pending"] * 10
    login, waits, _ = make(issuer, None)
    with login, pytest.raises(LoginExpired):
        login.access_token()
    assert sum(waits.waits) <= 15 and script.seen_polls == 2


def test_cancel(issuer: str, script: Script) -> None:
    script.polls = ["authorization_pending"] * 10
    cancel = threading.Event()
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        if script.seen_polls >= 2:
            cancel.set()

    login = DeviceLogin(
        issuer,
        CLIENT,
        cache=None,
        on_prompt=lambda p: None,
        sleep=sleep,
        clock=clock,
        cancel=cancel,
    )
    with login, pytest.raises(LoginCancelled):
        login.access_token()
    assert script.seen_polls == 2


def test_cache_file_is_private_and_keyed_by_issuer_and_client(
    issuer: str, script: Script, cache: TokenCache
) -> None:
    other = TokenCache(cache.path)
    other.put("https://other.example", CLIENT, Tokens("other-at", 9e9, "other-rt"))
    other.put(issuer, "another-client", Tokens("another-at", 9e9))
    login, _, _ = make(issuer, cache)
    with login:
        login.access_token()
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.path.parent.stat().st_mode) == 0o700
    entries = json.loads(cache.path.read_text())["entries"]
    assert set(entries) == {
        f"https://other.example {CLIENT}",
        f"{issuer} another-client",
        f"{issuer} {CLIENT}",
    }
    assert entries[f"https://other.example {CLIENT}"]["access_token"] == "other-at"
    assert [p.name for p in cache.path.parent.iterdir() if p.name.startswith(".tokens-")] == []


def test_cached_then_refreshed_on_use(issuer: str, script: Script, cache: TokenCache) -> None:
    clock = FakeClock()
    login, _, prompts = make(issuer, cache, clock=clock)
    with login:
        first = login.access_token()
        assert login.access_token() == first and script.refreshes == 0
        clock.advance(600 - 30)  # inside the 60 s margin
        refreshed = login.access_token()
    assert refreshed == "refreshed-at-2" and script.refreshes == 1
    stored = cache.get(issuer, CLIENT)
    assert stored is not None and stored.refresh_token == "refreshed-rt-2"  # rotated
    assert len(prompts) == 1


def test_a_dead_refresh_token_means_signing_in_again(
    issuer: str, script: Script, cache: TokenCache
) -> None:
    clock = FakeClock()
    cache.put(issuer, CLIENT, Tokens("old-at", clock() - 1, "old-rt"))
    script.refresh_error = "invalid_grant"
    login, _, prompts = make(issuer, cache, clock=clock)
    with login:
        with pytest.raises(LoginRequired):
            login.access_token(interactive=False)
        assert cache.get(issuer, CLIENT) is None
        assert login.access_token() == "device-at-1" and len(prompts) == 1


def test_logout_forgets_and_revokes(issuer: str, script: Script, cache: TokenCache) -> None:
    login, _, _ = make(issuer, cache)
    with login:
        login.access_token()
        login.logout()
    assert cache.get(issuer, CLIENT) is None and script.revoked == ["device-rt-1"]


def test_a_corrupt_cache_reads_as_empty(issuer: str, script: Script, cache: TokenCache) -> None:
    cache.path.parent.mkdir(parents=True)
    cache.path.write_text("{not json")
    login, _, prompts = make(issuer, cache)
    with login:
        login.access_token()
    assert len(prompts) == 1 and cache.get(issuer, CLIENT) is not None


def test_tokens_never_print_themselves() -> None:
    tokens = Tokens("secret-access", 1.0, "secret-refresh", "secret-id")
    assert "secret" not in repr(tokens)


CHILD = """
import sys, time
from broker_client.login import DeviceLogin
from broker_client.tokencache import TokenCache
issuer, path = sys.argv[1], sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()
login = DeviceLogin(issuer, "dna-cli", cache=TokenCache(path), on_prompt=lambda p: None)
print(login.access_token(interactive=False), flush=True)
"""


def run_children(issuer: str, path: Path, count: int) -> list[str]:
    """Start `count` processes that each ask the cache for a token, released together."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, issuer, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        outputs.append(out.strip())
    return outputs


def test_survives_a_new_process(issuer: str, script: Script, cache: TokenCache) -> None:
    login, _, _ = make(issuer, cache, clock=FakeClock(__import__("time").time()))
    with login:
        token = login.access_token()
    assert run_children(issuer, cache.path, 1) == [token]
    assert script.refreshes == 0 and script.seen_polls == 1


def test_racing_processes_refresh_once(issuer: str, script: Script, cache: TokenCache) -> None:
    cache.put(issuer, CLIENT, Tokens("stale-at", 1.0, "stale-rt"))
    script.refresh_delay = 0.3
    outputs = run_children(issuer, cache.path, 3)
    assert script.refreshes == 1
    assert outputs == ["refreshed-at-1"] * 3


def test_broker_without_the_device_flow(issuer: str, script: Script, tmp_path: Path) -> None:
    login = DeviceLogin(issuer + "/nowhere", CLIENT, cache=None, on_prompt=lambda p: None)
    with login, pytest.raises(LoginError):
        login.access_token()


def test_default_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BROKER_CLIENT_CACHE", str(tmp_path / "x.json"))
    assert TokenCache().path == tmp_path / "x.json"
    monkeypatch.delenv("BROKER_CLIENT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert TokenCache().path == tmp_path / "shotgrid-broker" / "tokens.json"
    assert os.fspath(TokenCache().path).endswith("tokens.json")
