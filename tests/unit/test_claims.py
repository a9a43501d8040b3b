from __future__ import annotations

from datetime import UTC, datetime, timedelta

from broker.store.records import FamilyRecord, RefreshTokenRecord, SessionRecord
from broker.tokens import claims

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SESSION = SessionRecord(
    sid="s1",
    user_id=101,
    login="alice",
    email="alice@example.com",
    name="Alice Artist",
    auth_time=NOW,
    expires_at=NOW + timedelta(days=30),
    last_checked_at=NOW,
)


def test_access_token_claims_carry_the_contract() -> None:
    c = claims.access_token_claims(
        issuer="https://i",
        audience="dna-api",
        client_id="dna-cli",
        scope="profile",
        jti="j",
        issued_at=NOW,
        expires_at=NOW + timedelta(seconds=600),
        session=SESSION,
    )
    assert c["sub"] == "101" and c["sg_user_id"] == 101 and c["sg_login"] == "alice"
    assert c["exp"] - c["iat"] == 600 and c["sid"] == "s1" and c["aud"] == "dna-api"


def test_client_credentials_token_has_no_user_claims() -> None:
    c = claims.access_token_claims(
        issuer="https://i",
        audience="dna-api",
        client_id="svc",
        scope="",
        jti="j",
        issued_at=NOW,
        expires_at=NOW,
        session=None,
    )
    assert c["sub"] == "svc" and "sg_login" not in c and "email" not in c


def test_refresh_claims_are_derived_from_records_only() -> None:
    fam = FamilyRecord(
        family_id="f",
        sid="s1",
        client_id="dna-cli",
        scope="profile",
        audience="dna-api",
        created_at=NOW,
        expires_at=NOW + timedelta(days=30),
    )
    rt = RefreshTokenRecord(
        jti="r", family_id="f", issued_at=NOW, expires_at=NOW + timedelta(days=7)
    )
    a = claims.refresh_token_claims(issuer="https://i", token=rt, family=fam, session=SESSION)
    b = claims.refresh_token_claims(issuer="https://i", token=rt, family=fam, session=SESSION)
    assert a == b and a["aud"] == "https://i" and a["fam"] == "f"


def test_id_token_and_user_claims_by_scope() -> None:
    c = claims.id_token_claims(
        issuer="https://i",
        client_id="dna-frontend",
        session=SESSION,
        scope="openid email",
        issued_at=NOW,
        expires_at=NOW,
        nonce="n",
        access_token="abc",
    )
    assert c["aud"] == "dna-frontend" and c["nonce"] == "n" and c["email_verified"] is True
    assert "name" not in c
    # OIDC Core §3.1.3.6 example shape: 16 bytes base64url, no padding
    assert len(c["at_hash"]) == 22
    assert claims.user_claims(SESSION, "profile") == {
        "name": "Alice Artist",
        "preferred_username": "alice",
    }
