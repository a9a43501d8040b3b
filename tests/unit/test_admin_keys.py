"""`token-broker keys` behind the CLI (`broker.admin`): a key never signs before it was
published, whatever the order of retirements and rotations an operator types."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.admin import Admin, AdminError, open_admin, retire_key, rotate_keys
from broker.settings import load_settings
from tests.support.broker import new_kek
from tests.support.clock import MovableClock


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def admin(tmp_path: Path, clock: MovableClock) -> Iterator[Admin]:
    settings = load_settings(store_url=f"sqlite:///{tmp_path / 'b.db'}", secret_key=new_kek())
    opened = open_admin(settings, clock=clock)
    opened.keys.ensure_keys()
    try:
        yield opened
    finally:
        opened.store.close()


def sig_states(admin: Admin) -> dict[str, str]:
    return {r.kid: r.state.value for r in admin.keys.records() if r.use == "sig"}


def kid_in(admin: Admin, state: str) -> str:
    return next(k for k, s in sig_states(admin).items() if s == state)


def published(admin: Admin) -> set[str]:
    return {k["kid"] for k in admin.keys.jwks()["keys"]}


def test_retiring_the_next_key_publishes_a_replacement(admin: Admin) -> None:
    old_next = kid_in(admin, "next")
    replacement = retire_key(admin, old_next)
    assert replacement is not None and replacement != old_next
    states = sig_states(admin)
    assert states[old_next] == "retired"
    assert states[replacement] == "next"
    assert replacement in published(admin)


def test_rotation_after_retiring_next_signs_with_a_published_key(
    admin: Admin, clock: MovableClock
) -> None:
    replacement = retire_key(admin, kid_in(admin, "next"))
    seen_before_rotation = published(admin)
    clock.advance(admin.settings.jwks_max_age + 1)
    (rotated,), warnings = rotate_keys(admin)
    assert rotated[0] == replacement
    assert rotated[0] in seen_before_rotation
    assert warnings == []


def test_rotation_without_a_next_key_publishes_one_and_refuses(
    admin: Admin, clock: MovableClock
) -> None:
    """A store whose next key is gone (retired by an older admin, or by hand) never gets
    a key promoted in the same breath as it is made."""
    current = kid_in(admin, "current")
    nxt = kid_in(admin, "next")
    now = clock()
    admin.store.retire_key(nxt, now, now)  # the store's primitive: no replacement made
    with pytest.raises(AdminError, match="no published next"):
        rotate_keys(admin)
    states = sig_states(admin)
    assert states[current] == "current"  # nothing rotated
    new_next = kid_in(admin, "next")
    assert new_next not in (nxt, current)
    clock.advance(admin.settings.jwks_max_age + 1)
    (rotated,), _ = rotate_keys(admin)
    assert rotated[0] == new_next


def test_a_signing_key_cannot_be_retired(admin: Admin) -> None:
    with pytest.raises(AdminError, match="is signing"):
        retire_key(admin, kid_in(admin, "current"))


def test_a_young_next_key_is_rotated_with_a_warning(admin: Admin) -> None:
    young = kid_in(admin, "next")
    (rotated,), warnings = rotate_keys(admin)
    assert rotated[0] == young
    assert len(warnings) == 1 and young in warnings[0] and "JWKS cache period" in warnings[0]
