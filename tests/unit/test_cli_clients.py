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
