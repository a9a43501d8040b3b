"""Validate shotgrid-token-broker access tokens offline and reach ShotGrid as the user.

    from broker_client import TokenValidator

    validator = TokenValidator("https://broker.example", audience="dna-api")
    claims = validator.validate(token)  # AccessTokenClaims, or an InvalidToken

Framework adapters live in `broker_client.integrations` (Starlette, FastAPI, DNA) and
the ShotGrid helpers in `broker_client.shotgrid`, so importing this package needs only
httpx and cryptography.
"""

from .jwks import JWKSCache
from .revocations import RevocationSet
from .validator import TokenValidator, ValidationCache
from .verify import (
    AccessTokenClaims,
    BadSignature,
    BrokerClientError,
    ExpiredToken,
    InsufficientScope,
    InvalidClaim,
    InvalidToken,
    JWKSUnavailable,
    KeySet,
    MalformedToken,
    NotYetValid,
    RevocationsUnavailable,
    TokenRevoked,
    UnknownKey,
    UnsupportedAlgorithm,
    VerificationKey,
    WrongAudience,
    WrongIssuer,
    WrongTokenType,
    verify_access_token,
)

__all__ = [
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
]
