"""The demo's banner is a tour whose every command works as printed: the real console
script starts a demo on free ports in a temporary directory, the banner is parsed, the
browser step is done over HTTP, and every shell line runs, in order, in one POSIX shell.
Each command is then checked for what its comment says it does."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.demo import CODE_PLACEHOLDER, Tour, banner
from tests.support.oidc import hidden_fields
from tests.support.servers import free_port

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

SCRIPT = Path(sys.executable).with_name("token-broker")
MARK = "@@@ step"


def claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    decoded: dict[str, Any] = json.loads(raw)
    return decoded


class Demo:
    def __init__(self, cwd: Path, port: int, sg_port: int) -> None:
        self.stderr = (cwd / "demo.log").open("wb")
        self.popen = subprocess.Popen(
            [
                *(str(SCRIPT), "demo", "--port", str(port), "--shotgrid-port", str(sg_port)),
                *("--data-dir", "demo-data"),
            ],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("BROKER_")},
                # a light accent: start-up says, in one line, how the page keeps it readable
                "BROKER_ACCENT_COLOR": "#f5c518",
            },
        )

    def banner(self, timeout: float = 60) -> list[str]:
        """Lines up to the last of the banner (the `clients list` command)."""
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        for raw in self.popen.stdout:
            lines.append(raw.decode().rstrip("\n"))
            if " clients list " in lines[-1] or time.monotonic() > deadline:
                break
        return lines

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self.stderr.close()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Demo, str, Path]]:
    port, sg_port = free_port(), free_port()
    running = Demo(tmp_path, port, sg_port)
    try:
        yield running, f"http://127.0.0.1:{port}", tmp_path
    finally:
        running.stop()


def tour_lines(lines: list[str]) -> tuple[list[str], list[str]]:
    """(shell commands, browser URLs) of the tour part of the banner."""
    start = next(i for i, line in enumerate(lines) if line.startswith("# 1."))
    commands, urls = [], []
    for line in lines[start:]:
        if not line.strip() or line.startswith("#"):
            continue
        (urls if line.startswith("http") else commands).append(line)
    return commands, urls


def sign_in_in_the_browser(authorize_url: str) -> str:
    """What a person does with the printed URL: the login page, alice's credentials, and
    the code from the address bar the browser lands on."""
    with httpx.Client(timeout=10) as browser:
        page = browser.get(authorize_url)
        assert page.status_code == 200
        assert 'name="username"' in page.text and 'name="password"' in page.text
        fields = hidden_fields(page.text)
        done = browser.post(
            authorize_url.split("?")[0],
            data={**fields, "username": "alice", "password": "alice-pw"},
        )
        assert done.status_code == 302, done.text
        location = done.headers["location"]
        assert location.startswith("http://127.0.0.1/callback?")
        code = httpx.URL(location).params["code"]
        assert httpx.URL(location).params["state"] == "tour"
        return code


@pytest.mark.skipif(shutil.which("curl") is None, reason="the tour's commands use curl")
def test_every_banner_command_works_as_printed(demo: tuple[Demo, str, Path]) -> None:
    proc, issuer, cwd = demo
    lines = proc.banner()
    text = "\n".join(lines)
    assert issuer in text and f"{issuer}/token" in text
    commands, urls = tour_lines(lines)
    assert len(urls) == 1 and urls[0].startswith(f"{issuer}/authorize?")
    code = sign_in_in_the_browser(urls[0])

    script = []
    for number, command in enumerate(commands):
        if command == f"CODE={CODE_PLACEHOLDER}":
            command = f"CODE={code}"
        script += [command, f'echo "{MARK} {number} $? ${{#ACCESS_TOKEN}}:${{ACCESS_TOKEN}}"']
    shell = subprocess.run(
        ["sh", "-c", "\n".join(script)], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert shell.returncode == 0, shell.stderr
    outputs: list[tuple[str, str]] = []  # (command's output, ACCESS_TOKEN after it)
    chunk: list[str] = []
    for line in shell.stdout.splitlines():
        if line.startswith(MARK):
            _, _, number, status, access = line.split(" ", 4)
            assert status == "0", f"{commands[int(number)]} failed: {shell.stderr}"
            outputs.append(("\n".join(chunk), access.split(":", 1)[1]))
            chunk = []
        else:
            chunk.append(line)
    assert len(outputs) == len(commands), shell.stdout

    def found(pattern: str) -> list[tuple[str, tuple[str, str]]]:
        return [(c, o) for c, o in zip(commands, outputs, strict=True) if re.search(pattern, c)]

    # 1. the password grant answers with tokens for the scopes it asked
    (first_cmd, (first, _)), *_ = found(r"^curl .*grant_type=password")
    tokens = json.loads(first)
    assert {"access_token", "refresh_token", "id_token"} <= set(tokens)
    assert tokens["scope"] == "openid profile email"
    # 2. the export lines keep a token in the shell
    signed_in = found(r"^export ACCESS_TOKEN")[0][1][1]
    assert claims(signed_in)["sg_login"] == "alice"
    # 3. userinfo with it
    userinfo = json.loads(found(r"/userinfo")[0][1][0])
    assert userinfo["sub"] == "101" and userinfo["email"] == "alice@example.com"
    # 4. the refresh gives a new access token, kept by the second pair of export lines
    refreshed = found(r"^export ACCESS_TOKEN")[1][1][1]
    assert refreshed != signed_in and claims(refreshed)["sub"] == "101"
    # 5. token exchange for review-api, then introspection says the token is active
    exchanged = json.loads(found(r"grant-type:token-exchange")[0][1][0])
    assert claims(exchanged["access_token"])["aud"] == "review-api"
    assert claims(exchanged["access_token"])["act"] == {"sub": "dna-backend"}
    assert json.loads(found(r"/introspect")[0][1][0])["active"] is True
    # 6. the browser's code, redeemed with the printed verifier
    code_tokens = json.loads(found(r"grant_type=authorization_code")[0][1][0])
    assert claims(code_tokens["id_token"])["aud"] == "dna-frontend"
    # 7. keys and clients of this very demo
    current_kids = {k["kid"] for k in httpx.get(f"{issuer}/jwks.json").json()["keys"]}
    listed_keys = found(r" keys list ")[0][1][0]
    assert current_kids and all(kid in listed_keys for kid in current_kids)
    listed_clients = found(r" clients list ")[0][1][0]
    for client_id in ("dna-cli", "dna-frontend", "review-tool", "dna-backend"):
        assert client_id in listed_clients
    assert first_cmd in text  # the contract's ready-to-paste password curl, as printed
    log = (cwd / "demo.log").read_text()
    warnings = [line for line in log.splitlines() if "BROKER_ACCENT_COLOR #f5c518" in line]
    assert len(warnings) == 1 and "[warning" in warnings[0], log  # console format
    assert '"event"' not in log  # human-readable lines by default, not JSON


def test_the_readme_tour_is_the_banner() -> None:
    """README's "Five-minute tour" is what `make run` prints on the default ports."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- demo-banner:start -->")[1].split("<!-- demo-banner:end -->")[0]
    expected = banner(
        Tour(
            issuer="http://127.0.0.1:8000",
            shotgrid_url="http://127.0.0.1:8100",
            data_dir=".broker-demo",
            program=".venv/bin/token-broker",
        )
    )
    assert block.strip() == f"```\n{expected}\n```"
