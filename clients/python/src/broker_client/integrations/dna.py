"""DNA adapter: `BrokerAuthProvider` speaks DNA's `AuthProviderBase` interface.

DNA picks its provider in `dna.auth_providers.auth_provider_base.get_auth_provider()`
from `AUTH_PROVIDER`; one more branch wires the broker in:

    elif provider == "broker":
        from broker_client.integrations.dna import BrokerAuthProvider

        return BrokerAuthProvider.from_env()

`validate_token` returns `{"email", "sub", "name"}` and raises `ValueError` subclasses
(`InvalidToken`) for tokens it must refuse, as DNA's interface asks; an unreachable
broker past the key set's staleness bound is `JWKSUnavailable` instead, not the token's fault.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ..validator import TokenValidator
from ..verify import REQUIRED_CLAIMS, InvalidClaim

__all__ = ["ENV_AUDIENCE", "ENV_ISSUER", "ENV_LEEWAY", "BrokerAuthProvider"]

ENV_ISSUER = "BROKER_ISSUER"
ENV_AUDIENCE = "BROKER_AUDIENCE"
ENV_LEEWAY = "BROKER_LEEWAY"

if TYPE_CHECKING:
    _Base = object
else:  # inside DNA, be a real subclass so isinstance checks and type hints agree
    try:
        from dna.auth_providers.auth_provider_base import AuthProviderBase as _Base
    except ImportError:
        _Base = object


class BrokerAuthProvider(_Base):
    def __init__(self, validator: TokenValidator) -> None:
        self.validator = validator

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        http_client: httpx.Client | None = None,
    ) -> BrokerAuthProvider:
        """Build from BROKER_ISSUER (required), BROKER_AUDIENCE (default dna-api) and
        BROKER_LEEWAY (seconds, default 30)."""
        env = os.environ if environ is None else environ
        issuer = env.get(ENV_ISSUER, "").strip()
        if not issuer:
            raise ValueError(f"{ENV_ISSUER} must be set to the broker's issuer URL")
        audience = env.get(ENV_AUDIENCE, "").strip() or "dna-api"
        try:
            leeway = float(env.get(ENV_LEEWAY, "30"))
        except ValueError:
            raise ValueError(f"{ENV_LEEWAY} must be a number of seconds") from None
        validator = TokenValidator(
            issuer,
            audience,
            http_client=http_client,
            leeway=leeway,
            required_claims=REQUIRED_CLAIMS | {"email"},
        )
        return cls(validator)

    def validate_token(self, token: str) -> dict[str, Any]:
        claims = self.validator.validate(token)
        if not claims.email:
            raise InvalidClaim("email")
        return {"email": claims.email, "sub": claims.sub, "name": claims.name}

    def get_user_email(self, token: str) -> str:
        email: str = self.validate_token(token)["email"]
        return email
