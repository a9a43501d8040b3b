from __future__ import annotations

import os

import pytest

from broker.tokens.crypto import DecryptionError, Sealer
from broker.tokens.secrets import check_client_secret, hash_client_secret


def test_round_trip_and_binding_to_the_record() -> None:
    sealer = Sealer([os.urandom(32)])
    blob = sealer.seal(b"upstream-refresh-token", "session:abc:rt")
    assert b"upstream-refresh-token" not in blob
    assert sealer.open(blob, "session:abc:rt") == b"upstream-refresh-token"
    with pytest.raises(DecryptionError):
        sealer.open(blob, "session:other:rt")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionError):
        sealer.open(tampered, "session:abc:rt")
    with pytest.raises(DecryptionError):
        sealer.open(b"short", "x")


def test_kek_rotation_old_records_stay_readable() -> None:
    old, new = os.urandom(32), os.urandom(32)
    old_blob = Sealer([old]).seal(b"secret", "r")
    rotated = Sealer([new, old])
    assert rotated.open(old_blob, "r") == b"secret"
    assert rotated.needs_reseal(old_blob)
    new_blob = rotated.seal(b"secret", "r")
    assert not rotated.needs_reseal(new_blob)
    with pytest.raises(DecryptionError, match="not configured"):
        Sealer([old]).open(new_blob, "r")


def test_client_secret_hash() -> None:
    stored = hash_client_secret("s3cret")
    assert "s3cret" not in stored
    assert check_client_secret("s3cret", stored)
    assert not check_client_secret("s3cret!", stored)
    assert not check_client_secret("s3cret", None)
    assert not check_client_secret("s3cret", "garbage")
    assert hash_client_secret("s3cret") != stored  # salted
