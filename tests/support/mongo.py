"""The real-MongoDB test path: tests that need a server run only when
`BROKER_TEST_MONGODB_URI` points at one (README, "Tests"), each on a database of its own
that is dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import pymongo

MONGODB_URI = os.environ.get("BROKER_TEST_MONGODB_URI")


def with_database(uri: str, name: str) -> str:
    """`uri` naming the database `name` instead of whatever it named (or nothing).

    The path of a MongoDB URI is also the default authentication database, so a URI with
    credentials and no `authSource` keeps authenticating where it did (its own database,
    or `admin` when it named none)."""
    parts = urlsplit(uri)
    query = parts.query
    given = {key.lower() for key, _ in parse_qsl(query, keep_blank_values=True)}
    if "@" in parts.netloc and "authsource" not in given:
        auth_db = unquote(parts.path.lstrip("/")) or "admin"
        query = f"{query}&" if query else ""
        query += f"authSource={quote(auth_db, safe='')}"
    return urlunsplit(parts._replace(path=f"/{quote(name, safe='')}", query=query))


@contextlib.contextmanager
def scratch_database(uri: str) -> Iterator[str]:
    """A URL of `uri`'s server naming a fresh database, dropped on the way out."""
    name = f"broker_test_{uuid.uuid4().hex[:12]}"
    try:
        yield with_database(uri, name)
    finally:
        with pymongo.MongoClient(uri) as client:
            client.drop_database(name)
