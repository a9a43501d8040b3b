"""Checks a command makes before it serves or changes anything, so an operator's mistake
is one line naming the setting and what to do, never a traceback from deep inside a
worker (the contract: every command exits non-zero with a one-line message).

Two stages. `store_url_problems` is pure and joins the settings pass (`load_settings`'s
`check`), so a bad store URL is listed with every other bad setting. `check_store` then
opens the store and unseals the signing keys it holds, which finds what only the store can
tell: a key-encryption key that is not the one the keys were sealed under, a MongoDB URL
pymongo refuses, a server refusing the indexes the broker needs, a database written by a
newer broker. `serve` runs both before its workers start, so each is one line instead of
a traceback per worker.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from broker.settings import Settings, env_name

STORE_SCHEMES = ("sqlite", "mongodb", "mongodb+srv")
SQLITE_PREFIX = "sqlite:///"
STORE_URL = env_name("store_url")
SECRET_KEY = env_name("secret_key")


class PreflightError(Exception):
    """A mistake found before starting: one line naming the setting and the remedy."""


class WrongKeyError(PreflightError):
    """The key-encryption key does not open the signing keys in the store."""


def redact_url(url: str) -> str:
    """The URL without its password, for messages (`mongodb://user:***@host/db`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def sqlite_path(url: str) -> Path | None:
    """The file a `sqlite:///` URL names: `sqlite:///relative/path` is relative to the
    working directory, `sqlite:////absolute/path` is absolute. None for other URLs."""
    if not url.lower().startswith(SQLITE_PREFIX):
        return None
    return Path(url[len(SQLITE_PREFIX) :].split("?", 1)[0])


def store_url_problems(url: str | None, *, must_exist: bool = False) -> list[str]:
    """What is wrong with a store URL, without opening it. A SQLite file may be created
    (a first start), its directory never: a mistyped directory would otherwise become an
    empty store that answers every question with nothing. `must_exist`: the command only
    reads (`keys list`, `clients list`), so a missing file is a mistyped path too."""
    if url is None:
        return []
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in STORE_SCHEMES:
        shown = f"scheme {scheme!r}" if scheme else "URL without a scheme"
        return [
            f"{STORE_URL}: unsupported {shown}; use sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or mongodb://host/dbname"
        ]
    path = sqlite_path(url)
    if scheme == "sqlite" and (path is None or not path.name):
        return [
            f"{STORE_URL}: a SQLite URL reads sqlite:///relative/path.db (from the working "
            "directory) or sqlite:////absolute/path.db"
        ]
    if path is None:
        return []
    where = path if path.is_absolute() else f"{path} (relative to {Path.cwd()})"
    if not path.parent.is_dir():
        hint = (
            "; for an absolute path write four slashes: sqlite:////" + str(path)
            if not path.is_absolute() and Path("/", path).parent.is_dir()
            else ""
        )
        return [
            f"{STORE_URL}: directory {path.parent} of {where} does not exist; create it "
            f"or fix the path{hint}"
        ]
    if path.is_dir():
        return [f"{STORE_URL}: {where} is a directory; name the database file"]
    if must_exist and not path.exists():
        return [
            f"{STORE_URL}: no database at {where}; check the path (`serve`, `demo` and "
            "`clients add` create it)"
        ]
    return []


def check_store(settings: Settings) -> str | None:
    """Open the store and unseal every signing key in it. Raises `PreflightError` on a
    mistake; returns a warning line when the store does not answer (a broker started
    during a store outage serves 503 until it answers, by design), else None."""
    from broker.clock import system_clock
    from broker.components import key_manager, sealer_for
    from broker.store import StoreError, StoreUnavailable, open_store
    from broker.tokens.crypto import DecryptionError

    assert settings.store_url is not None
    shown = redact_url(settings.store_url)
    try:
        store = open_store(settings.store_url)
    except StoreUnavailable as exc:
        return unreachable_message(shown, exc) + "; starting anyway"
    except StoreError as exc:
        raise PreflightError(f"{STORE_URL}: {exc}") from None
    try:
        store.ping()  # MongoDB: also creates the indexes, or says which the server refuses
        key_manager(settings, store, sealer_for(settings), system_clock).reload()
    except StoreUnavailable as exc:
        return unreachable_message(shown, exc) + "; starting anyway"
    except DecryptionError:
        raise WrongKeyError(wrong_key_message(shown)) from None
    except StoreError as exc:
        raise PreflightError(f"{STORE_URL}: {exc}") from None
    finally:
        store.close()
    return None


def wrong_key_message(shown_url: str) -> str:
    return (
        f"{SECRET_KEY}: the signing keys in {shown_url} were sealed under another "
        f"key-encryption key; set the key this store was created with (a replaced one "
        f"goes in {env_name('old_secret_keys')})"
    )


def unreachable_message(shown_url: str, exc: BaseException) -> str:
    """The store does not answer: where, and why in short (pymongo's reasons run long)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    reason = text if len(text) <= 120 else text[:117] + "..."
    return f"{STORE_URL}: the store at {shown_url} does not answer ({reason})"
