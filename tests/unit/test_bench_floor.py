"""The hand-written refresh grant `bench/floor_app.py --refresh` measures must do the
grant's whole job, or its figure would flatter the reference the broker is held to."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.bench import load_bench


@pytest.fixture(scope="module")
def floor_app() -> ModuleType:
    return load_bench("floor_app")


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_hand_refresh_rotates_and_signs_verifiable_tokens(
    floor_app: ModuleType, tmp_path: Path, alg: str
) -> None:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    hand = floor_app.HandRefresh(str(tmp_path / "floor.db"), alg, floor_app.signer_for(key))
    first = hand.login("dna-cli")
    status, second = hand.refresh("dna-cli", first["refresh_token"])
    assert status == 200, second

    claims = jwt.decode(
        second["access_token"], key.public_key(), algorithms=[alg], audience="dna-api"
    )
    assert jwt.get_unverified_header(second["access_token"])["typ"] == "at+jwt"
    assert claims["client_id"] == "dna-cli" and claims["sg_login"] == "alice"
    assert second["refresh_token"] != first["refresh_token"]

    # A used token, a forged MAC and another client's token are all refused...
    assert hand.refresh("dna-cli", first["refresh_token"])[0] == 400
    head, body, mac = second["refresh_token"].split(".")
    forged = f"{head}.{body}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}"
    assert hand.refresh("dna-cli", forged)[0] == 400
    assert hand.refresh("review-tool", second["refresh_token"])[0] == 400
    # ...and none of them consumed the live token.
    status, third = hand.refresh("dna-cli", second["refresh_token"])
    assert status == 200, third
