"""`token-broker clients` for the token-exchange policy, as an operator runs it (a
subprocess of the venv against a SQLite store)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from broker.store import open_store
from tests.support.broker import new_kek

pytestmark = pytest.mark.timeout(60)

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env["BROKER_STORE_URL"] = f"sqlite:///{tmp_path / 'broker.db'}"
    env["BROKER_SECRET_KEY"] = new_kek()
    return env


def cli(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", "clients", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=environ,
    )


def test_add_then_update_the_exchange_policy(environ: dict[str, str]) -> None:
    added = cli(
        environ, "add", "svc", "--confidential", "--grant", EXCHANGE, "--audience", "dna-api"
    )
    assert added.returncode == 0, added.stderr
    store = open_store(environ["BROKER_STORE_URL"])
    try:
        before = store.get_client("svc")
        assert before is not None
        assert before.audiences == ("dna-api",) and not before.may_exchange_shotgrid
        updated = cli(
            environ,
            "update",
            "svc",
            "--audience",
            "review-api",
            "--audience",
            "dna-api",
            "--shotgrid-exchange",
            "--introspect",
            "--max-exchange-lifetime",
            "120",
        )
        assert updated.returncode == 0, updated.stderr
        assert "shotgrid_exchange=yes" in updated.stdout
        after = store.get_client("svc")
        assert after is not None
        assert after.audiences == ("review-api", "dna-api")
        assert after.may_exchange_shotgrid and after.may_introspect
        assert after.max_exchange_lifetime == 120
        assert after.secret_hash == before.secret_hash  # the secret survives an update
        assert after.grant_types == (EXCHANGE,)

        narrowed = cli(
            environ, "update", "svc", "--no-shotgrid-exchange", "--max-exchange-lifetime", "0"
        )
        assert narrowed.returncode == 0, narrowed.stderr
        last = store.get_client("svc")
        assert last is not None
        assert not last.may_exchange_shotgrid and last.max_exchange_lifetime is None
        assert last.audiences == ("review-api", "dna-api")  # untouched
        assert cli(environ, "update", "svc", "--no-audiences").returncode == 0
        cleared = store.get_client("svc")
        assert cleared is not None and cleared.audiences == ()
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["update", "ghost", "--introspect"], "no client 'ghost'"),
        (["update", "cli", "--grant", EXCHANGE], "confidential"),
        (["update", "cli", "--introspect"], "confidential"),
        (["update", "cli", "--grant", "magic"], "unknown grant type"),
        (["update", "cli", "--max-exchange-lifetime", "-5"], "0 or more"),
        (["update", "cli", "--audience", "a", "--no-audiences"], "not allowed with"),
    ],
)
def test_bad_updates_are_one_line_and_nonzero(
    environ: dict[str, str], args: list[str], fragment: str
) -> None:
    assert cli(environ, "add", "cli", "--public", "--grant", "password").returncode == 0
    result = cli(environ, *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]


# --- every field through the command line: add and update, in-process ----------------------
@pytest.fixture
def in_process(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key in [k for k in os.environ if k.startswith("BROKER_")]:
        monkeypatch.delenv(key)
    for key, value in environ.items():
        if key.startswith("BROKER_"):
            monkeypatch.setenv(key, value)
    return environ


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from broker.cli import main

    try:
        status = main(["clients", *args])
    except SystemExit as exc:  # argparse
        status = int(exc.code or 0)
    return status, capsys.readouterr().err


ADD_REFUSED = [
    (["--grant", "magic"], "--grant: unknown grant type 'magic'"),
    (["--grant", "authorization_code"], "--redirect-uri: authorization_code needs"),
    (["--grant", "authorization_code", "--redirect-uri", "not-a-url"], "not an absolute URI"),
    (["--grant", "authorization_code", "--redirect-uri", "http://evil.example.com/cb"], "http"),
    (["--grant", "authorization_code", "--redirect-uri", "https://a.example/cb#f"], "fragment"),
    (
        ["--grant", "password", "--post-logout-redirect-uri", "http://evil.example.com/"],
        "--post-logout-redirect-uri:",
    ),
    (["--grant", "password", "--origin", "https://a.example/path"], "--origin:"),
    (["--grant", "password", "--scope", "bad scope"], "--scope: scope 'bad scope'"),
    (["--grant", "password", "--scope", "superpowers"], "--scope: unknown scope"),
    (["--grant", "password", "--introspect"], "--introspect: only confidential"),
    (["--grant", "password", "--shotgrid-exchange"], "--shotgrid-exchange:"),
    (["--grant", "client_credentials"], "--grant: client_credentials needs a confidential"),
    (["--confidential", "--grant", EXCHANGE, "--audience", "billing"], "--audience:"),
    (
        ["--confidential", "--grant", "client_credentials", "--max-exchange-lifetime", "-3"],
        "--max-exchange-lifetime: must be 0 or more",
    ),
    (["--grant", "password", "--name", "x" * 300], "--name:"),
    ([], "required: --grant"),
]


@pytest.mark.parametrize(("args", "fragment"), ADD_REFUSED)
def test_add_refuses_each_bad_field_in_one_line(
    in_process: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    fragment: str,
) -> None:
    status, err = run_main(capsys, "add", "app", *args)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], err
    store = open_store(in_process["BROKER_STORE_URL"])
    try:
        assert store.get_client("app") is None  # nothing half-written
    finally:
        store.close()


def test_add_accepts_what_the_rules_allow(
    in_process: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = run_main(
        capsys,
        "add",
        "native",
        "--grant",
        "authorization_code",
        "--grant",
        "refresh_token",
        "--redirect-uri",
        "com.example.app:/callback",
        "--redirect-uri",
        "http://127.0.0.1/callback",
        "--redirect-uri",
        "https://app.example.com/cb",
        "--origin",
        "https://app.example.com",
        "--scope",
        "openid",
    )
    assert status == 0, err


UPDATE_REFUSED = [
    (["--grant", "magic"], "--grant: unknown grant type"),
    (["--scope", "bad scope"], "--scope:"),
    (["--audience", "billing"], "--audience: audience 'billing' is not in BROKER_AUDIENCES"),
    (["--max-exchange-lifetime", "-3"], "--max-exchange-lifetime:"),
    (["--grant", "client_credentials"], "--shotgrid-exchange: ShotGrid tokens come by token"),
]


@pytest.mark.parametrize(("args", "fragment"), UPDATE_REFUSED)
def test_update_refuses_each_bad_field_in_one_line(
    in_process: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    fragment: str,
) -> None:
    add = ["add", "svc", "--confidential", "--grant", EXCHANGE, "--shotgrid-exchange"]
    assert run_main(capsys, *add)[0] == 0
    store = open_store(in_process["BROKER_STORE_URL"])
    try:
        before = store.get_client("svc")
        status, err = run_main(capsys, "update", "svc", *args)
        assert status == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], err
        assert store.get_client("svc") == before  # unchanged
    finally:
        store.close()


def test_list_says_when_the_store_has_no_clients(
    in_process: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(capsys, "add", "cli", "--grant", "password")[0] == 0
    assert run_main(capsys, "remove", "cli")[0] == 0
    status, err = run_main(capsys, "list")
    assert status == 0
    assert "no clients registered in sqlite:///" in err


def test_the_admin_right_is_given_and_taken_with_admin(environ: dict[str, str]) -> None:
    """`--admin` is the right to the admin API, in the same implementation the API uses;
    the command line may remove the last admin client (it is the way back in)."""
    added = cli(environ, "add", "ops", "--confidential", "--grant", "client_credentials", "--admin")
    assert added.returncode == 0, added.stderr
    store = open_store(environ["BROKER_STORE_URL"])
    try:
        record = store.get_client("ops")
        assert record is not None and "admin" in record.scopes
        narrowed = cli(environ, "update", "ops", "--scope", "profile")
        assert narrowed.returncode == 0, narrowed.stderr
        assert "admin=yes" in narrowed.stdout  # a scope list never drops the right
        kept = store.get_client("ops")
        assert kept is not None and kept.scopes == ("profile", "admin")
        taken = cli(environ, "update", "ops", "--no-admin")
        assert taken.returncode == 0 and "admin=no" in taken.stdout
        taken_away = store.get_client("ops")
        assert taken_away is not None and taken_away.scopes == ("profile",)
        assert cli(environ, "update", "ops", "--admin").returncode == 0
        removed = cli(environ, "remove", "ops")
        assert removed.returncode == 0, removed.stderr
        assert store.get_client("ops") is None
    finally:
        store.close()


@pytest.mark.parametrize(
    "args",
    [
        ["add", "web", "--public", "--grant", "password", "--admin"],
        ["add", "svc", "--confidential", "--grant", EXCHANGE, "--admin"],
        ["add", "svc", "--confidential", "--grant", "client_credentials", "--scope", "admin"],
    ],
)
def test_the_admin_right_needs_a_client_credentials_client(
    environ: dict[str, str], args: list[str]
) -> None:
    result = cli(environ, *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "admin" in result.stderr


def test_backchannel_logout_uri_add_update_clear(environ: dict[str, str]) -> None:
    added = cli(
        environ,
        "add",
        "rp",
        "--grant",
        "password",
        "--backchannel-logout-uri",
        "https://rp.example/oidc/backchannel",
    )
    assert added.returncode == 0, added.stderr
    store = open_store(environ["BROKER_STORE_URL"])
    try:
        record = store.get_client("rp")
        assert record is not None
        assert record.backchannel_logout_uri == "https://rp.example/oidc/backchannel"
        local = "http://127.0.0.1:9000/bc?x=1"
        updated = cli(environ, "update", "rp", "--backchannel-logout-uri", local)
        assert updated.returncode == 0, updated.stderr
        assert f"backchannel_logout_uri={local}" in updated.stdout
        assert store.get_client("rp").backchannel_logout_uri == local  # type: ignore[union-attr]
        assert cli(environ, "update", "rp", "--no-backchannel-logout-uri").returncode == 0
        assert store.get_client("rp").backchannel_logout_uri is None  # type: ignore[union-attr]
    finally:
        store.close()


@pytest.mark.parametrize(
    "uri",
    [
        "http://rp.example/bc",  # plain http off loopback
        "https://rp.example/bc#frag",
        "https://user@rp.example/bc",
        "/relative/bc",
        "ftp://rp.example/bc",
        "https://",
        "https://rp.example/b c",
    ],
)
@pytest.mark.parametrize("command", ["add", "update"])
def test_bad_backchannel_logout_uri_is_refused(
    in_process: dict[str, str], capsys: pytest.CaptureFixture[str], uri: str, command: str
) -> None:
    if command == "update":
        assert run_main(capsys, "add", "rp", "--grant", "password")[0] == 0
        status, err = run_main(capsys, "update", "rp", "--backchannel-logout-uri", uri)
    else:
        status, err = run_main(
            capsys, "add", "rp", "--grant", "password", "--backchannel-logout-uri", uri
        )
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("token-broker: --backchannel-logout-uri:"), err
    store = open_store(in_process["BROKER_STORE_URL"])
    try:
        record = store.get_client("rp")
        assert record is None if command == "add" else record.backchannel_logout_uri is None  # type: ignore[union-attr]
    finally:
        store.close()
