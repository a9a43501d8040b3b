"""SQLite backend: the conformance suite, plus what only SQLite has (file, URL, old rows)."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.store import Store, StoreError, StoreUnavailable, open_store
from broker.store.records import SCHEMA_VERSION, ClientRecord
from broker.store.sqlite import SQLiteStore
from tests.store.conformance import StoreConformance


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = SQLiteStore(tmp_path / "broker.db")
        yield store
        store.close()


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///data/rel.db")
    assert isinstance(relative, SQLiteStore)
    relative.ping()
    relative.close()
    assert (tmp_path / "data" / "rel.db").exists()
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")  # sqlite:////abs/path
    absolute.ping()
    absolute.close()
    assert (tmp_path / "abs.db").exists()
    with pytest.raises(StoreError):
        open_store("sqlite://")


def test_new_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "b.db")
    store.ping()
    assert stat.S_IMODE((tmp_path / "b.db").stat().st_mode) == 0o600
    with sqlite3.connect(tmp_path / "b.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = raw.execute("SELECT value FROM schema_meta WHERE name = 'version'").fetchone()
        assert version[0] == SCHEMA_VERSION
    raw.close()
    store.close()
    SQLiteStore(tmp_path / "b.db").close()  # reopening is idempotent


def test_reads_rows_of_an_older_schema(tmp_path: Path) -> None:
    """A clients table from before `allowed_origins`, `max_exchange_lifetime` and `schema`:
    opening adds the columns and reading fills the record defaults."""
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.execute(
        'CREATE TABLE clients ("client_id" TEXT PRIMARY KEY NOT NULL, "name", "public" INTEGER,'
        ' "secret_hash", "grant_types" TEXT, "redirect_uris" TEXT)'
    )
    raw.execute("INSERT INTO clients VALUES ('legacy', 'Legacy', 0, 'h', '[\"password\"]', '[]')")
    raw.commit()
    raw.close()
    store = SQLiteStore(path)
    assert store.get_client("legacy") == ClientRecord(
        client_id="legacy", name="Legacy", public=False, secret_hash="h", grant_types=("password",)
    )
    store.close()


def test_reads_session_rows_from_before_sign_in_methods(tmp_path: Path) -> None:
    """Sessions written before `auth_method`, `client_ip`, `user_agent` and `upstream_sid`
    existed read as password sign-ins with nothing recorded."""
    path = tmp_path / "old-sessions.db"
    raw = sqlite3.connect(path)
    raw.execute(
        'CREATE TABLE sessions ("sid" TEXT PRIMARY KEY NOT NULL, "user_id", "login", "email",'
        ' "name", "auth_time" INTEGER, "expires_at" INTEGER, "last_checked_at" INTEGER,'
        ' "revoked_at" INTEGER, "cookie_hash", "schema" INTEGER)'
    )
    raw.execute(
        "INSERT INTO sessions VALUES ('old', 7, 'bob', 'b@x', 'Bob', 1000, 999999999999, 1000,"
        " NULL, NULL, 1)"
    )
    raw.commit()
    raw.close()
    store = SQLiteStore(path)
    session = store.get_session("old")
    assert session is not None and session.login == "bob"
    assert session.auth_method == "password"
    assert (session.client_ip, session.user_agent, session.upstream_sid) == (None, None, None)
    store.close()


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "n.db").close()
    with sqlite3.connect(tmp_path / "n.db") as raw:
        raw.execute(
            "UPDATE schema_meta SET value = ? WHERE name = 'version'", (SCHEMA_VERSION + 1,)
        )
    raw.close()
    with pytest.raises(StoreError, match="schema version"):
        SQLiteStore(tmp_path / "n.db")


def test_locked_database_is_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "l.db", busy_timeout=0.05)
    blocker = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable):
            store.put_client(ClientRecord(client_id="x"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.put_client(ClientRecord(client_id="x"))
    store.close()


def test_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreUnavailable):
        SQLiteStore(tmp_path / "dir.db")


def test_close_closes_every_thread_connection(tmp_path: Path) -> None:
    import threading

    store = SQLiteStore(tmp_path / "t.db")
    threads = [threading.Thread(target=store.ping) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.ping()
    store.close()
    store.ping()  # a closed store reopens lazily rather than failing
    store.close()
