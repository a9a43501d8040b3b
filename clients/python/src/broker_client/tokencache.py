"""The per-user token cache of `broker_client.login`: one JSON file for every issuer and
client a person signs in to, so a command-line tool or a DCC plug-in signs in once and
keeps working across restarts.

- One entry per (issuer, client_id); other entries are left as they are.
- The file is created with mode 0600 (its directory 0700) and replaced atomically (a
  temporary file in the same directory, fsync'd, then `os.replace`), so a reader never
  sees half a file and a crash never leaves one.
- Safe across processes: every read-modify-write holds an exclusive lock on a sidecar
  `.lock` file (`fcntl.flock`, or `msvcrt.locking` on Windows), so two processes
  refreshing at once refresh once (the second finds the first's result).

Default location: `$BROKER_CLIENT_CACHE` if set, else `shotgrid-broker/tokens.json` under
the user's cache directory (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches`
on macOS, `%LOCALAPPDATA%` on Windows).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CACHE_ENV = "BROKER_CLIENT_CACHE"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Tokens:
    """A signed-in person's tokens for one client of one broker."""

    access_token: str
    expires_at: float
    """When the access token expires (seconds since the epoch)."""
    refresh_token: str | None = None
    id_token: str | None = None
    scope: str = ""
    token_type: str = "Bearer"

    def fresh(self, now: float, margin: float = 60.0) -> bool:
        """Usable for at least `margin` more seconds."""
        return self.expires_at - margin > now

    def __repr__(self) -> str:  # never print the tokens themselves
        return f"Tokens(expires_at={self.expires_at:.0f}, scope={self.scope!r})"

    @classmethod
    def from_response(cls, body: dict[str, Any], now: float | None = None) -> Tokens:
        """From an RFC 6749 §5.1 token response."""
        access = body.get("access_token")
        expires_in = body.get("expires_in")
        if not isinstance(access, str) or not access:
            raise ValueError("token response without an access_token")
        if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
            expires_in = 0
        refresh, id_token, scope = (
            body.get("refresh_token"),
            body.get("id_token"),
            body.get("scope"),
        )
        return cls(
            access_token=access,
            expires_at=(time.time() if now is None else now) + float(expires_in),
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            id_token=id_token if isinstance(id_token, str) and id_token else None,
            scope=scope if isinstance(scope, str) else "",
            token_type=str(body.get("token_type") or "Bearer"),
        )


def default_path() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "shotgrid-broker" / "tokens.json"


def entry_key(issuer: str, client_id: str) -> str:
    return f"{issuer.rstrip('/')} {client_id}"


class TokenCache:
    """The cache file. Thread-safe and process-safe (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._threads = threading.RLock()
        self._depth = 0

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across threads and processes; re-entrant within one thread."""
        with self._threads:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._ensure_dir()
            fd = os.open(
                self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600
            )
            try:
                _lock_file(fd)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    _unlock_file(fd)
            finally:
                os.close(fd)

    def get(self, issuer: str, client_id: str) -> Tokens | None:
        entry = self._read().get(entry_key(issuer, client_id))
        if not isinstance(entry, dict):
            return None
        try:
            return Tokens(**entry)
        except TypeError:
            return None  # written by another version: as if absent

    def put(self, issuer: str, client_id: str, tokens: Tokens) -> None:
        with self.lock():
            data = self._read()
            data[entry_key(issuer, client_id)] = asdict(tokens)
            self._write(data)

    def delete(self, issuer: str, client_id: str) -> None:
        with self.lock():
            data = self._read()
            if data.pop(entry_key(issuer, client_id), None) is not None:
                self._write(data)

    # --- the file ---------------------------------------------------------------------------
    def _ensure_dir(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _read(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        entries = raw.get("entries") if isinstance(raw, dict) else None
        return dict(entries) if isinstance(entries, dict) else {}

    def _write(self, entries: dict[str, Any]) -> None:
        self._ensure_dir()
        text = json.dumps({"version": FORMAT_VERSION, "entries": entries}, indent=1)
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=self.path.parent)
        try:
            os.chmod(tmp, 0o600)  # mkstemp makes it 0600 already; be explicit
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock_file(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]

    def _unlock_file(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]

else:
    import fcntl

    def _lock_file(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)

    def _unlock_file(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
