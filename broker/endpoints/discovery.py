"""Authorization server metadata: RFC 8414 and OpenID Connect Discovery 1.0 §3.

Built from the issuer setting only (never from the request's Host), and truthful: a field
appears only when the endpoint or feature exists.
"""

from __future__ import annotations

from typing import Any

from broker.grants.registry import GRANT_TYPES, GRANTS, auth_methods
from broker.server import SCOPES_SUPPORTED


def metadata(issuer: str, *, signing_alg: str, openid: bool) -> dict[str, Any]:
    algs = sorted({signing_alg, "RS256"})
    doc: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "end_session_endpoint": f"{issuer}/logout",
        "jwks_uri": f"{issuer}/jwks.json",
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        # consent and select_account are accepted (first-party broker: no consent or
        # account-choice screen to show) but not advertised, to keep discovery truthful.
        "prompt_values_supported": ["none", "login"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": auth_methods(),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "access_token_signing_alg_values_supported": algs,
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "sid",
            "nonce",
            "at_hash",
            "name",
            "preferred_username",
            "email",
            "email_verified",
        ],
        "service_documentation": f"{issuer}/openapi.yaml",
        # OIDC Back-Channel Logout 1.0 §2.1: logout tokens carry `sid`.
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
    }
    for spec in GRANTS:
        doc.update({name: f"{issuer}{path}" for name, path in spec.metadata})
    doc.update(service_endpoints(issuer, signing_alg))
    if not openid:
        for key in (
            "subject_types_supported",
            "id_token_signing_alg_values_supported",
            "userinfo_endpoint",
            "end_session_endpoint",
            "prompt_values_supported",
        ):
            doc.pop(key)
    return doc


def service_endpoints(issuer: str, signing_alg: str) -> dict[str, Any]:
    """Revocation (RFC 7009), introspection (RFC 7662, JWT answers per RFC 9701 §6), and
    the revocation feed for offline validators (this broker's documented extension)."""
    return {
        "revocation_feed_endpoint": f"{issuer}/revocations",
        "revocation_endpoint": f"{issuer}/revoke",
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "introspection_endpoint": f"{issuer}/introspect",
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "introspection_signing_alg_values_supported": [signing_alg],
    }
