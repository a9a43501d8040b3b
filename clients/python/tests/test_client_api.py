"""The public surface is pinned: a name added or removed here is a deliberate change."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

PUBLIC = {
    "broker_client": [
        "AccessTokenClaims",
        "BadSignature",
        "BrokerClientError",
        "ExpiredToken",
        "InsufficientScope",
        "InvalidClaim",
        "InvalidToken",
        "JWKSCache",
        "JWKSUnavailable",
        "KeySet",
        "MalformedToken",
        "NotYetValid",
        "RevocationSet",
        "RevocationsUnavailable",
        "TokenRevoked",
        "TokenValidator",
        "UnknownKey",
        "UnsupportedAlgorithm",
        "ValidationCache",
        "VerificationKey",
        "WrongAudience",
        "WrongIssuer",
        "WrongTokenType",
        "verify_access_token",
    ],
    "broker_client.jwks": ["JWKSCache", "parse_max_age"],
    "broker_client.revocations": [
        "KINDS",
        "FeedPage",
        "MalformedFeed",
        "RevocationEntry",
        "RevocationSet",
        "parse_feed",
    ],
    "broker_client.background": [
        "FEED_TYPE",
        "FeedUnavailable",
        "Refresher",
        "RevocationFeed",
        "Waiter",
    ],
    "broker_client.logout": [
        "BACKCHANNEL_LOGOUT_EVENT",
        "LOGOUT_TOKEN_TYPE",
        "InvalidLogoutToken",
        "LogoutTokenVerifier",
    ],
    "broker_client.validator": ["TokenValidator", "ValidationCache"],
    "broker_client.shotgrid": [
        "ACCESS_TOKEN_TYPE",
        "READ_METHODS",
        "SHOTGRID_TOKEN_TYPE",
        "TOKEN_EXCHANGE_GRANT",
        "WRITE_METHODS",
        "ReconnectingConnection",
        "ShotGridToken",
        "SudoConnectionPool",
        "TokenExchangeError",
        "aexchange_for_shotgrid_token",
        "exchange_for_shotgrid_token",
    ],
    "broker_client.integrations.starlette": [
        "BearerError",
        "BrokerAuthBackend",
        "BrokerUser",
        "bearer_token",
        "on_auth_error",
        "www_authenticate",
    ],
    "broker_client.integrations.fastapi": ["require_token"],
    "broker_client.integrations.backchannel": [
        "backchannel_logout_endpoint",
        "backchannel_logout_route",
    ],
    "broker_client.integrations.dna": [
        "ENV_AUDIENCE",
        "ENV_FAIL_CLOSED",
        "ENV_ISSUER",
        "ENV_LEEWAY",
        "ENV_REVOCATION_POLL",
        "ENV_SHOTGRID_API_KEY",
        "ENV_SHOTGRID_SCRIPT_NAME",
        "ENV_SHOTGRID_URL",
        "BrokerAuthProvider",
        "BrokerUnavailable",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_all_is_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(PUBLIC[module])
    for name in mod.__all__:
        assert hasattr(mod, name), name


def test_verify_all_names_the_error_tree() -> None:
    from broker_client import verify

    others = {"JWKSCache", "RevocationSet", "TokenValidator", "ValidationCache"}
    assert set(PUBLIC["broker_client"]) - others <= set(verify.__all__)


def test_error_tree() -> None:
    import broker_client as bc

    for name in PUBLIC["broker_client"]:
        obj = getattr(bc, name)
        if isinstance(obj, type) and issubclass(obj, bc.InvalidToken):
            assert issubclass(obj, ValueError)
            assert issubclass(obj, bc.BrokerClientError)
    assert not issubclass(bc.JWKSUnavailable, ValueError)
    # Revocation refusals are 401s that existing handlers catch; a fail-closed refusal
    # is a 503 that existing JWKSUnavailable handlers catch.
    assert issubclass(bc.TokenRevoked, bc.InvalidToken)
    assert issubclass(bc.RevocationsUnavailable, bc.JWKSUnavailable)
    assert not issubclass(bc.RevocationsUnavailable, ValueError)
    assert not issubclass(bc.InsufficientScope, bc.InvalidToken)


def test_the_package_is_typed() -> None:
    import broker_client

    assert (Path(broker_client.__file__).parent / "py.typed").is_file()
