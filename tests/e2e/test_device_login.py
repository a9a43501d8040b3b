"""`broker_client.login` and `token-broker login` against the real broker and ShotGrid
emulator: a polling client approved (or denied) on the verification page over HTTP, the
tokens verified, cached, refreshed on use; the shell command prints an access token on
stdout and the URL and code on stderr, and says how to install the client when missing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from broker_client.login import DeviceLogin, DevicePrompt, LoginDenied
from broker_client.tokencache import TokenCache

from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.device import PollingDevice, approve

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningBroker, MovableClock]]:
    clock = MovableClock()
    tmp = tmp_path_factory.mktemp("device-login")
    with broker_with_emulator(tmp, clock, device_poll_interval=1) as (running, _emu, _site):
        yield running, clock


def test_device_login_approved_cached_and_refreshed(
    env: tuple[RunningBroker, MovableClock], tmp_path: Path
) -> None:
    running, clock = env
    cache = TokenCache(tmp_path / "tokens.json")
    device = PollingDevice(running, clock, cache)
    prompt = device.start()
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", prompt.user_code)
    assert prompt.verification_uri == running.url + "/device"
    with running.client() as browser:
        assert approve(browser, prompt.user_code).status_code == 200
    token = device.finish()
    assert isinstance(token, str), token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "101" and claims["client_id"] == "dna-cli"
    assert "openid" in claims["scope"].split() and "offline_access" in claims["scope"].split()
    with httpx.Client(base_url=running.url) as http:
        userinfo = http.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert userinfo.status_code == 200 and userinfo.json()["preferred_username"] == "alice"
    # Next time (another DeviceLogin, as after a restart): the cached token, no prompt.
    prompts: list[DevicePrompt] = []
    again = DeviceLogin(
        running.url,
        "dna-cli",
        cache=TokenCache(cache.path),
        on_prompt=prompts.append,
        clock=lambda: clock().timestamp(),
    )
    with again:
        assert again.access_token() == token
        clock.advance(600)  # expired: refreshed through the broker, rotated
        refreshed = again.access_token()
    assert refreshed != token and not prompts
    stored = cache.get(running.url, "dna-cli")
    assert stored is not None and stored.access_token == refreshed


def test_device_login_denied(env: tuple[RunningBroker, MovableClock], tmp_path: Path) -> None:
    running, clock = env
    cache = TokenCache(tmp_path / "tokens.json")
    device = PollingDevice(running, clock, cache)
    prompt = device.start()
    with running.client() as browser:
        assert approve(browser, prompt.user_code, action="deny").status_code == 200
    assert isinstance(device.finish(), LoginDenied)
    assert cache.get(running.url, "dna-cli") is None


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "broker", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_token_broker_login_prints_a_token(
    env: tuple[RunningBroker, MovableClock], tmp_path: Path
) -> None:
    running, _clock = env
    cache = tmp_path / "cli-tokens.json"
    args = ("login", "--issuer", running.url, "--client-id", "dna-cli", "--cache", str(cache))
    process = cli(*args)
    assert process.stderr is not None
    first = process.stderr.readline()
    match = re.search(r"open (\S+) and enter the code (\S+)", first)
    assert match, first
    assert match.group(1) == running.url + "/device"
    with running.client() as browser:
        assert approve(browser, match.group(2)).status_code == 200
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    token = out.strip()
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "101"
    assert "\n" not in token and match.group(2) not in out  # stdout holds the token only
    # Cached: the second call prints a token without asking anything.
    again = cli(*args)
    out2, err2 = again.communicate(timeout=30)
    assert again.returncode == 0 and out2.strip() == token and err2 == ""


def test_token_broker_login_without_the_client_library(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['broker_client.login'] = None; "
        "from broker.cli import main; "
        "sys.exit(main(['login', '--issuer', 'http://127.0.0.1:1', '--client-id', 'x']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "pip install shotgrid-broker-client" in done.stderr
