"""Every command's error paths, as an operator meets them: the real `token-broker`
console script in a subprocess must exit with status 2 and one line on stderr naming what
is wrong, never a traceback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from broker.admin import open_admin
from broker.settings import load_settings
from tests.support.broker import new_kek

pytestmark = pytest.mark.timeout(120)

SCRIPT = Path(sys.executable).with_name("token-broker")
MONGO_DOWN = "mongodb://127.0.0.1:1/broker?serverSelectionTimeoutMS=300&connectTimeoutMS=300"


@dataclass(frozen=True)
class World:
    """What the cases refer to: a store holding keys sealed under `kek`, a demo data dir
    whose secret.key does not open its keys, a listening (busy) port, a plain file."""

    root: Path
    store_url: str
    kek: str
    bad_demo_dir: Path
    busy_port: int
    a_file: Path
    serve_env: dict[str, str] = field(default_factory=dict)


def _store_with_keys(directory: Path, kek: str) -> str:
    url = f"sqlite:///{directory / 'broker.db'}"
    admin = open_admin(load_settings(store_url=url, secret_key=kek))
    try:
        admin.keys.ensure_keys()
    finally:
        admin.store.close()
    return url


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("cli-errors")
    (root / "store").mkdir()
    kek = new_kek()
    url = _store_with_keys(root / "store", kek)
    demo_dir = root / "demo"
    demo_dir.mkdir()
    _store_with_keys(demo_dir, new_kek())
    (demo_dir / "secret.key").write_text(new_kek() + "\n")
    a_file = root / "a-file"
    a_file.write_text("not a directory\n")
    (root / "bad.toml").write_text("issuer = \n")
    with contextlib.closing(socket.socket()) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        serve_env = {
            "BROKER_ISSUER": "http://127.0.0.1:9",
            "BROKER_SHOTGRID_URL": "http://127.0.0.1:9",
            "BROKER_STORE_URL": url,
            "BROKER_SECRET_KEY": kek,
            "BROKER_SHOTGRID_SCRIPT_NAME": "token-broker",
            "BROKER_SHOTGRID_SCRIPT_KEY": "token-broker-key",
        }
        yield World(root, url, kek, demo_dir, port, a_file, serve_env)


def run(world: World, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=world.root,
        env={**base, **env},
    )


def admin_env(w: World) -> dict[str, str]:
    return {"BROKER_STORE_URL": w.store_url, "BROKER_SECRET_KEY": w.kek}


Argv = Callable[[World], list[str]]
Env = Callable[[World], dict[str, str]]

# (id, argv, env, fragment of the one line); argv and env may refer to the world.
CASES: list[tuple[str, Argv, Env, str]] = [
    # --- serve ---
    ("serve-port-range", lambda w: ["serve", "--port", "99999"], lambda w: {}, "not a port"),
    ("serve-port-text", lambda w: ["serve", "--port", "http"], lambda w: {}, "not a port"),
    ("serve-workers", lambda w: ["serve", "--workers", "0"], lambda w: w.serve_env, "--workers"),
    (
        "serve-store-scheme",
        lambda w: ["serve"],
        lambda w: {**w.serve_env, "BROKER_STORE_URL": "postgres://db/broker"},
        "BROKER_STORE_URL: unsupported scheme 'postgres'",
    ),
    (
        "serve-sqlite-dir",
        lambda w: ["serve"],
        lambda w: {**w.serve_env, "BROKER_STORE_URL": "sqlite:///no/such/dir/broker.db"},
        "BROKER_STORE_URL: directory no/such/dir",
    ),
    (
        "serve-sqlite-dir-is-file",
        lambda w: ["serve"],
        lambda w: {**w.serve_env, "BROKER_STORE_URL": f"sqlite:///{w.a_file}/broker.db"},
        "does not exist",
    ),
    (
        "serve-wrong-kek",
        lambda w: ["serve"],
        lambda w: {**w.serve_env, "BROKER_SECRET_KEY": new_kek()},
        "BROKER_SECRET_KEY: the signing keys",
    ),
    (
        "serve-bad-kek",
        lambda w: ["serve"],
        lambda w: {**w.serve_env, "BROKER_SECRET_KEY": "c2hvcnQ"},
        "BROKER_SECRET_KEY: must decode to exactly 32 bytes",
    ),
    (
        "serve-busy-port",
        lambda w: ["serve", "--port", str(w.busy_port)],
        lambda w: w.serve_env,
        "cannot listen on 127.0.0.1:{0}: Address already in use",
    ),
    (
        "serve-bad-host",
        lambda w: ["serve", "--host", "no-such-host.invalid"],
        lambda w: w.serve_env,
        "cannot listen on no-such-host.invalid",
    ),
    (
        "serve-config-missing",
        lambda w: ["serve", "--config", "missing.toml"],
        lambda w: {},
        "cannot read config file",
    ),
    (
        "serve-config-toml",
        lambda w: ["serve", "--config", "bad.toml"],
        lambda w: {},
        "not valid TOML",
    ),
    (
        "serve-bad-value",
        lambda w: ["serve"],
        lambda w: {**w.serve_env, "BROKER_ACCESS_TOKEN_TTL": "soon"},
        "BROKER_ACCESS_TOKEN_TTL",
    ),
    (
        "serve-insecure-issuer",
        lambda w: ["serve"],
        lambda w: {**w.serve_env, "BROKER_ISSUER": "http://auth.example.com"},
        "BROKER_ISSUER must be https://",
    ),
    # --- demo ---
    ("demo-port", lambda w: ["demo", "--port", "0"], lambda w: {}, "not a port"),
    ("demo-sg-port", lambda w: ["demo", "--shotgrid-port", "65536"], lambda w: {}, "not a port"),
    (
        "demo-busy-port",
        lambda w: ["demo", "--data-dir", "d1", "--port", str(w.busy_port)],
        lambda w: {},
        "cannot listen",
    ),
    (
        "demo-data-dir-is-file",
        lambda w: ["demo", "--data-dir", str(w.a_file)],
        lambda w: {},
        "--data-dir",
    ),
    (
        "demo-wrong-key",
        lambda w: ["demo", "--data-dir", str(w.bad_demo_dir)],
        lambda w: {},
        "secret.key does not open",
    ),
    (
        "demo-bad-setting",
        lambda w: ["demo", "--data-dir", "d2"],
        lambda w: {"BROKER_LOG_LEVEL": "loud"},
        "BROKER_LOG_LEVEL",
    ),
    ("demo-log-format", lambda w: ["demo", "--log-format", "xml"], lambda w: {}, "--log-format"),
    # --- keys ---
    (
        "keys-no-store",
        lambda w: ["keys", "list"],
        lambda w: {"BROKER_SECRET_KEY": w.kek},
        "BROKER_STORE_URL is required",
    ),
    (
        "keys-list-no-database",
        lambda w: ["keys", "list"],
        lambda w: {**admin_env(w), "BROKER_STORE_URL": "sqlite:///store/typo.db"},
        "no database at store/typo.db",
    ),
    (
        "keys-rotate-wrong-kek",
        lambda w: ["keys", "rotate"],
        lambda w: {**admin_env(w), "BROKER_SECRET_KEY": new_kek()},
        "BROKER_SECRET_KEY: the signing keys",
    ),
    (
        "keys-retire-unknown",
        lambda w: ["keys", "retire", "no-such-kid"],
        admin_env,
        "no signing key with kid 'no-such-kid'",
    ),
    (
        "keys-mongo-down",
        lambda w: ["keys", "list"],
        lambda w: {**admin_env(w), "BROKER_STORE_URL": MONGO_DOWN},
        "does not answer",
    ),
    (
        "keys-data-dir-missing",
        lambda w: ["keys", "rotate", "--data-dir", "nowhere"],
        lambda w: {},
        "--data-dir nowhere: no demo data there",
    ),
    (
        "keys-data-dir-wrong-key",
        lambda w: ["keys", "--data-dir", str(w.bad_demo_dir), "rotate"],
        lambda w: {},
        "secret.key does not open",
    ),
    # --- clients ---
    (
        "clients-mongo-down",
        lambda w: ["clients", "list"],
        lambda w: {**admin_env(w), "BROKER_STORE_URL": MONGO_DOWN},
        "BROKER_STORE_URL: the store at mongodb://127.0.0.1:1/broker",
    ),
    (
        "clients-store-scheme",
        lambda w: ["clients", "list"],
        lambda w: {**admin_env(w), "BROKER_STORE_URL": "postgres://db"},
        "unsupported scheme",
    ),
    (
        "clients-add-redirect",
        lambda w: [
            *("clients", "add", "x", "--grant", "authorization_code"),
            *("--redirect-uri", "http://evil.example.com/cb"),
        ],
        admin_env,
        "--redirect-uri: 'http://evil.example.com/cb' uses plain http outside loopback",
    ),
    (
        "clients-add-no-grant",
        lambda w: ["clients", "add", "x"],
        admin_env,
        "the following arguments are required: --grant",
    ),
    (
        "clients-add-lifetime",
        lambda w: [
            *("clients", "add", "x", "--confidential", "--grant", "client_credentials"),
            *("--max-exchange-lifetime", "-3"),
        ],
        admin_env,
        "--max-exchange-lifetime: must be 0 or more",
    ),
    (
        "clients-update-unknown",
        lambda w: ["clients", "update", "ghost", "--introspect"],
        admin_env,
        "no client 'ghost'",
    ),
    (
        "clients-remove-unknown",
        lambda w: ["clients", "remove", "ghost"],
        admin_env,
        "no client 'ghost'",
    ),
    # --- the emulator ---
    ("emulator-port", lambda w: ["shotgrid-emulator", "--port", "-1"], lambda w: {}, "not a port"),
    (
        "emulator-busy-port",
        lambda w: ["shotgrid-emulator", "--port", str(w.busy_port)],
        lambda w: {},
        "cannot listen",
    ),
]


@pytest.mark.parametrize(
    ("argv", "env", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_error_is_one_line_and_status_2(world: World, argv: Argv, env: Env, fragment: str) -> None:
    result = run(world, argv(world), env(world))
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("token-broker"), lines[0]
    fragment = fragment.format(world.busy_port)
    assert fragment in lines[0], lines[0]
    assert result.stdout == ""


def test_every_invalid_setting_on_its_own_line_in_one_pass(world: World) -> None:
    """Invalid values and what `serve` requires of valid ones, issuer check included,
    come together: fixing one line never uncovers another."""
    result = run(
        world,
        ["serve"],
        {
            "BROKER_ISSUER": "http://auth.example.com",
            "BROKER_ACCESS_TOKEN_TTL": "soon",
            "BROKER_STORE_URL": "postgres://db/broker",
            "BROKER_UPSTREAM_STRATEGY": "custody",
        },
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("token-broker: BROKER_") for line in lines), lines
    named = [line.split()[1].split(":")[0].split("=")[0] for line in lines]
    assert sorted(named) == sorted(
        [
            "BROKER_ACCESS_TOKEN_TTL",
            "BROKER_ISSUER",
            "BROKER_SHOTGRID_URL",
            "BROKER_SECRET_KEY",
            "BROKER_STORE_URL",
        ]
    ), lines


def test_a_busy_port_leaves_nothing_behind(world: World) -> None:
    """`serve` on a busy port stops before any worker starts: nothing listens, nothing
    was logged about a started application."""
    result = run(world, ["serve", "--port", str(world.busy_port)], world.serve_env)
    assert result.returncode == 2
    assert "startup complete" not in result.stderr.lower()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["keys", "retire", "-AbC_1"], ["keys", "retire", "--", "-AbC_1"]),
        (
            ["keys", "retire", "--data-dir", "d", "-x"],
            ["keys", "retire", "--data-dir", "d", "--", "-x"],
        ),
        (["keys", "retire", "--data-dir=d", "-x"], ["keys", "retire", "--data-dir=d", "--", "-x"]),
        (["keys", "retire", "plain-kid"], ["keys", "retire", "plain-kid"]),
        (["keys", "retire", "--", "-x"], ["keys", "retire", "--", "-x"]),
        (["keys", "retire", "--help"], ["keys", "retire", "--help"]),
        (["clients", "remove", "-x"], ["clients", "remove", "-x"]),
    ],
)
def test_a_kid_may_begin_with_a_dash(argv: list[str], expected: list[str]) -> None:
    """Kids are base64url: `keys retire -AbC...` names a kid, not an option."""
    from broker.cli import _kid_as_positional, build_parser

    assert _kid_as_positional(argv) == expected
    if "--help" not in argv and argv[0] == "keys":
        assert build_parser().parse_args(expected).kid == argv[-1]
