"""The signing-key lifecycle: next → current → retired → dropped, over a real SQLite store."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from broker.store import KeyState, open_store
from broker.tokens.crypto import Sealer
from broker.tokens.keys import KeyManager
from tests.support.clock import MovableClock


def manager(tmp_path: Path, clock: MovableClock, alg: str = "RS256") -> KeyManager:
    store = open_store(f"sqlite:///{tmp_path / 'keys.db'}")
    return KeyManager(
        store,
        Sealer([os.urandom(32)]),
        clock=clock,
        signing_alg=alg,
        rotation_interval=timedelta(days=30),
        retire_after=timedelta(minutes=20),
        reload_interval=timedelta(seconds=60),
    )


def states(km: KeyManager) -> dict[str, str]:
    return {r.kid: r.state.value for r in km.records() if r.use == "sig"}


def test_first_start_creates_current_and_next_and_a_private_refresh_key(tmp_path: Path) -> None:
    km = manager(tmp_path, MovableClock())
    km.ensure_keys()
    assert sorted(states(km).values()) == ["current", "next"]
    published = {k["kid"] for k in km.jwks()["keys"]}
    assert published == set(states(km))  # the MAC key for refresh tokens is never published
    assert all(k["kty"] == "RSA" and "d" not in k for k in km.jwks()["keys"])
    km.ensure_keys()  # idempotent
    assert len(states(km)) == 2


def test_es256_deployment_also_keeps_rs256_for_id_tokens(tmp_path: Path) -> None:
    km = manager(tmp_path, MovableClock(), alg="ES256")
    km.ensure_keys()
    algs = sorted(r.alg for r in km.records() if r.use == "sig" and r.state is KeyState.CURRENT)
    assert algs == ["ES256", "RS256"]
    token = km.sign({"sub": "1"}, "at+jwt")
    assert km.verify(token, use="sig", typ="at+jwt")["sub"] == "1"


def test_rotation_promotes_next_and_old_tokens_keep_verifying(tmp_path: Path) -> None:
    clock = MovableClock()
    km = manager(tmp_path, clock)
    km.ensure_keys()
    old_token = km.sign({"sub": "1"}, "at+jwt")
    before = states(km)
    nxt = next(k for k, s in before.items() if s == "next")
    current, new_next = km.rotate()
    assert current == nxt
    after = states(km)
    assert after[nxt] == "current" and after[new_next] == "next"
    assert list(after.values()).count("retired") == 1
    assert km.verify(old_token, use="sig", typ="at+jwt")["sub"] == "1"
    retired = next(k for k, s in after.items() if s == "retired")
    assert retired in {k["kid"] for k in km.jwks()["keys"]}
    clock.advance(21 * 60)  # past retire_after: unpublished and unusable
    km.reload()
    assert retired not in {k["kid"] for k in km.jwks()["keys"]}
    with pytest.raises(ValueError):
        km.verify(old_token, use="sig", typ="at+jwt")


def test_scheduled_rotation(tmp_path: Path) -> None:
    clock = MovableClock()
    km = manager(tmp_path, clock)
    km.ensure_keys()
    assert km.rotate_if_due() is False
    first = km.current().kid
    clock.advance(30 * 86400 + 1)
    assert km.rotate_if_due() is True
    assert km.current().kid != first


def test_verify_refuses_wrong_use_typ_and_tampering(tmp_path: Path) -> None:
    km = manager(tmp_path, MovableClock())
    km.ensure_keys()
    access = km.sign({"sub": "1"}, "at+jwt")
    refresh = km.sign_refresh({"sub": "1"}, "rt+jwt")
    with pytest.raises(ValueError):
        km.verify(refresh, use="sig", typ="at+jwt")
    with pytest.raises(ValueError):
        km.verify(access, use="rt", typ="rt+jwt")
    with pytest.raises(ValueError):
        km.verify(access, use="sig", typ="rt+jwt")
    head, body, sig = access.split(".")
    with pytest.raises(ValueError):
        km.verify(f"{head}.{body}x.{sig}", use="sig", typ="at+jwt")
    for garbage in ("", "a.b", "a.b.c", "x" * 9000, "eyJ9.e30.AA"):
        with pytest.raises(ValueError):
            km.verify(garbage, use="sig", typ="at+jwt")


def test_keys_are_sealed_at_rest(tmp_path: Path) -> None:
    km = manager(tmp_path, MovableClock())
    km.ensure_keys()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for jwk in km.jwks()["keys"]:
        # the public modulus is public; the private exponent must not be in the file
        assert jwk["n"].encode() not in raw  # the whole JWK is sealed, public parts too
