"""Offline verification of broker access tokens (RFC 9068 JWTs signed per RFC 7515).

`verify_access_token` is a pure function: token, key set, issuer, audience and clock in,
typed `AccessTokenClaims` out, or one of the errors below. It does the JWS work with
`cryptography` directly; the algorithm allowlist comes from the key set (each JWK names
one algorithm), never from the token header, and only RS256 and ES256 exist here, so
`none` and every HMAC algorithm are refused whatever a token claims.

Errors (all `InvalidToken`s are also `ValueError`s; `error` is the RFC 6750 §3.1 code)::

    BrokerClientError(Exception)
    ├── InvalidToken(ValueError)      invalid_token, answered with 401
    │   ├── MalformedToken            not a compact JWS, bad base64url or JSON, too large
    │   ├── UnsupportedAlgorithm      alg not that of the key (none, HS256, ...)
    │   ├── WrongTokenType            not an access token: a refresh, ID or logout token, ...
    │   ├── UnknownKey                kid not in the key set, even after a refetch
    │   ├── BadSignature
    │   ├── ExpiredToken              exp passed (beyond the leeway)
    │   ├── NotYetValid               nbf or iat in the future (beyond the leeway)
    │   ├── WrongIssuer
    │   ├── WrongAudience
    │   ├── InvalidClaim              a required claim missing or of the wrong type
    │   └── TokenRevoked              its session, refresh family or jti is revoked
    ├── InsufficientScope             a valid token without a required scope: 403
    └── JWKSUnavailable               no usable key set (broker unreachable past the bound): 503
        └── RevocationsUnavailable    fail_closed, and the revocation feed is unreadable: 503
"""

from __future__ import annotations

import binascii
import json
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from types import MappingProxyType
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = [
    "DEFAULT_LEEWAY",
    "MAX_TOKEN_BYTES",
    "REQUIRED_CLAIMS",
    "AccessTokenClaims",
    "BadSignature",
    "BrokerClientError",
    "Clock",
    "ExpiredToken",
    "InsufficientScope",
    "InvalidClaim",
    "InvalidToken",
    "JWKSUnavailable",
    "KeySet",
    "MalformedToken",
    "NotYetValid",
    "RevocationsUnavailable",
    "TokenRevoked",
    "UnknownKey",
    "UnsupportedAlgorithm",
    "VerificationKey",
    "WrongAudience",
    "WrongIssuer",
    "WrongTokenType",
    "verify_access_token",
    "verify_typed_jws",
]

Clock = Callable[[], float]
"""Returns the current time in epoch seconds; `time.time` unless a test moves it."""

MAX_TOKEN_BYTES: Final = 8192
DEFAULT_LEEWAY: Final = 30.0
# RFC 9068 §2.2: the claims every access token carries. The broker's user claims
# (email, name, sg_login, sg_user_id, ...) are type-checked when present; require them
# too by passing a larger `required_claims`.
REQUIRED_CLAIMS: Final = frozenset({"iss", "sub", "aud", "exp", "iat", "jti", "client_id"})
SUPPORTED_ALGORITHMS: Final = frozenset({"RS256", "ES256"})


# --- errors -------------------------------------------------------------------------


class BrokerClientError(Exception):
    """Base of every error this library raises on purpose."""


class InvalidToken(BrokerClientError, ValueError):
    """The token must not be accepted. `description` is safe to show to the caller."""

    error = "invalid_token"

    def __init__(self, description: str = "the access token is invalid") -> None:
        super().__init__(description)
        self.description = description


class MalformedToken(InvalidToken):
    pass


class UnsupportedAlgorithm(InvalidToken):
    pass


class WrongTokenType(InvalidToken):
    pass


class UnknownKey(InvalidToken):
    def __init__(self, kid: str) -> None:
        super().__init__("the token was signed by an unknown key")
        self.kid = kid


class BadSignature(InvalidToken):
    pass


class ExpiredToken(InvalidToken):
    def __init__(self, exp: float) -> None:
        super().__init__("the access token expired")
        self.exp = exp


class NotYetValid(InvalidToken):
    pass


class WrongIssuer(InvalidToken):
    pass


class WrongAudience(InvalidToken):
    pass


class InvalidClaim(InvalidToken):
    def __init__(self, claim: str, description: str | None = None) -> None:
        super().__init__(description or f"claim {claim!r} is missing or has the wrong type")
        self.claim = claim


class TokenRevoked(InvalidToken):
    """Valid in every other way, but the broker revoked it: its login session ended
    (logout), its refresh family was revoked, or the token itself was (`/revoke`)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"the access token was revoked ({_REVOKED_BY.get(kind, kind)})")
        self.kind = kind


_REVOKED_BY: Final = {
    "sid": "its session ended",
    "fam": "its refresh family was revoked",
    "jti": "it was revoked",
}


class InsufficientScope(BrokerClientError):
    """A valid token that lacks a scope the resource requires (RFC 6750 §3.1, 403)."""

    error = "insufficient_scope"

    def __init__(self, required: Collection[str]) -> None:
        self.required = frozenset(required)
        super().__init__("the access token lacks scope " + " ".join(sorted(self.required)))
        self.description = str(self)


class JWKSUnavailable(BrokerClientError):
    """No usable key set: the broker cannot be reached and the last good one is too old.

    A server-side problem, not the token's: answer 503. `retry_after` is a hint in
    seconds (when the next attempt is due), for a `Retry-After` header.
    """

    def __init__(self, message: str = "the broker's key set is unavailable", retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


class RevocationsUnavailable(JWKSUnavailable):
    """`fail_closed=True` and the revocation feed has been unreadable for too long.

    A `JWKSUnavailable` so that every handler already answering 503 for an unreachable
    broker does so here too: both mean "cannot tell right now", not "bad token".
    """

    def __init__(
        self, message: str = "the broker's revocation feed is unavailable", retry_after: int = 5
    ) -> None:
        super().__init__(message, retry_after)


# --- keys ---------------------------------------------------------------------------

_PKCS1v15: Final = padding.PKCS1v15()
_SHA256_DIGEST_INFO: Final = bytes.fromhex("3031300d060960864801650304020105000420")  # §9.2
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key from a JWKS, loaded once, with the single algorithm it may verify."""

    kid: str
    alg: str
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    verify: Callable[[bytes, bytes], None] = field(repr=False, compare=False)

    @classmethod
    def create(
        cls, kid: str, public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    ) -> VerificationKey:
        if isinstance(public_key, rsa.RSAPublicKey):
            recover = public_key.recover_data_from_signature
            size = (public_key.key_size + 7) // 8

            def verify(signature: bytes, signed: bytes) -> None:
                # RFC 8017 §8.2.2: recover the encoded message (OpenSSL checks the
                # 00 01 FF.. 00 padding) and compare it whole with the DigestInfo we
                # expect. Same check as verify(), about a microsecond cheaper per call.
                if len(signature) != size:
                    raise InvalidSignature
                expected = _SHA256_DIGEST_INFO + sha256(signed).digest()
                if recover(signature, _PKCS1v15, None) != expected:
                    raise InvalidSignature

            return cls(kid, "RS256", public_key, verify)
        if isinstance(public_key.curve, ec.SECP256R1):
            verify_ec = public_key.verify

            def verify(signature: bytes, signed: bytes) -> None:
                # JWS carries ECDSA as raw r || s (RFC 7518 §3.4); cryptography wants DER.
                if len(signature) != 64:
                    raise InvalidSignature
                r = int.from_bytes(signature[:32], "big")
                s = int.from_bytes(signature[32:], "big")
                verify_ec(encode_dss_signature(r, s), signed, _ECDSA_SHA256)

            return cls(kid, "ES256", public_key, verify)
        raise ValueError("only RSA and P-256 keys are supported")

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> VerificationKey | None:
        """Load one JWK (RFC 7517/7518 §6); None for keys we must not or cannot use."""
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            return None
        if jwk.get("use", "sig") != "sig":
            return None
        ops = jwk.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            return None
        kty, alg = jwk.get("kty"), jwk.get("alg")
        try:
            if kty == "RSA" and alg in (None, "RS256"):
                n, e = _b64_int(jwk["n"]), _b64_int(jwk["e"])
                if n.bit_length() < 2048:
                    return None
                return cls.create(kid, rsa.RSAPublicNumbers(e, n).public_key())
            if kty == "EC" and jwk.get("crv") == "P-256" and alg in (None, "ES256"):
                x, y = _b64_int(jwk["x"]), _b64_int(jwk["y"])
                return cls.create(
                    kid, ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
                )
        except (KeyError, TypeError, ValueError):
            return None
        return None  # oct (HMAC) keys and everything else are never used


class KeySet:
    """An immutable set of verification keys by kid; the algorithm allowlist is theirs."""

    __slots__ = ("_by_kid",)

    def __init__(self, keys: Iterable[VerificationKey] = ()) -> None:
        self._by_kid: dict[str, VerificationKey] = {k.kid: k for k in keys}

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeySet:
        """Build from a JWKS document, skipping keys that cannot verify RS256/ES256."""
        keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
        if not isinstance(keys, list):
            raise ValueError("a JWKS needs a 'keys' list")
        loaded = (VerificationKey.from_jwk(k) for k in keys if isinstance(k, Mapping))
        return cls(k for k in loaded if k is not None)

    def get(self, kid: str) -> VerificationKey | None:
        return self._by_kid.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_kid

    def __len__(self) -> int:
        return len(self._by_kid)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._by_kid)

    @property
    def algorithms(self) -> frozenset[str]:
        return frozenset(k.alg for k in self._by_kid.values())

    def __repr__(self) -> str:
        return f"KeySet({sorted(self._by_kid)!r})"


# --- claims -------------------------------------------------------------------------


class AccessTokenClaims:
    """The claims of a verified broker access token (CONTRACT.md, RFC 9068 §2.2).

    Read-only views over the verified payload, whose types `check_claims` has checked:
    building it costs one object, not one attribute per claim (the cold path counts).
    The RFC 9068 claims are typed as present; they are None only for a claim that the
    caller removed from `required_claims` and the token left out.
    """

    __slots__ = ("_claims", "aud")

    _claims: dict[str, Any]
    aud: tuple[str, ...]

    def __init__(self, claims: dict[str, Any], aud: tuple[str, ...]) -> None:
        object.__setattr__(self, "_claims", claims)
        object.__setattr__(self, "aud", aud)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("AccessTokenClaims is read-only")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AccessTokenClaims):
            return NotImplemented
        return self._claims == other._claims

    def __hash__(self) -> int:
        return hash((self._claims.get("iss"), self._claims.get("jti")))

    def __repr__(self) -> str:
        return f"AccessTokenClaims(sub={self.sub!r}, aud={self.aud!r}, exp={self.exp!r})"

    @property
    def raw(self) -> Mapping[str, Any]:
        return MappingProxyType(self._claims)

    @property
    def iss(self) -> str:
        return self._claims["iss"]  # type: ignore[no-any-return]

    @property
    def sub(self) -> str:
        return self._claims.get("sub")  # type: ignore[return-value]

    @property
    def exp(self) -> float:
        return self._claims.get("exp")  # type: ignore[return-value]

    @property
    def iat(self) -> float:
        return self._claims.get("iat")  # type: ignore[return-value]

    @property
    def jti(self) -> str:
        return self._claims.get("jti")  # type: ignore[return-value]

    @property
    def client_id(self) -> str:
        return self._claims.get("client_id")  # type: ignore[return-value]

    @property
    def scope(self) -> str:
        return self._claims.get("scope") or ""

    @property
    def nbf(self) -> float | None:
        return self._claims.get("nbf")

    @property
    def sid(self) -> str | None:
        return self._claims.get("sid")

    @property
    def fam(self) -> str | None:
        """The refresh family the token came from (absent on client-credentials tokens)."""
        return self._claims.get("fam")

    @property
    def auth_time(self) -> float | None:
        return self._claims.get("auth_time")

    @property
    def email(self) -> str | None:
        return self._claims.get("email")

    @property
    def name(self) -> str | None:
        return self._claims.get("name")

    @property
    def sg_login(self) -> str | None:
        return self._claims.get("sg_login")

    @property
    def sg_user_id(self) -> int | None:
        return self._claims.get("sg_user_id")

    @property
    def act(self) -> Mapping[str, Any] | None:
        """RFC 8693 §4.1 actor, on tokens made by token exchange."""
        act = self._claims.get("act")
        return act if isinstance(act, dict) else None

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.scope.split())

    def has_scopes(self, required: Iterable[str]) -> bool:
        return self.scopes.issuperset(required)


# --- the JWS work ---------------------------------------------------------------------

# base64url -> base64 for binascii's strict decoder; '+', '/' and '=' become '*', which
# strict mode rejects, so only the url-safe alphabet without padding gets through.
_B64URL = bytes.maketrans(b"-_+/=", b"+/***")
_a2b = binascii.a2b_base64


def _b64decode(segment: bytes) -> bytes:
    try:
        return _a2b(segment.translate(_B64URL) + b"=" * (-len(segment) % 4), strict_mode=True)
    except binascii.Error:
        raise MalformedToken("the token is not base64url") from None


def _b64_int(value: Any) -> int:
    if not isinstance(value, str):
        raise TypeError(value)
    try:
        return int.from_bytes(_b64decode(value.encode("ascii")), "big")
    except (MalformedToken, UnicodeEncodeError):
        raise ValueError(value) from None


_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _json_object(text: str) -> Any:
    # The decoder's scanner without json.loads' whitespace regexes: signed payloads are
    # compact JSON. Anything else (whitespace around it) takes the ordinary path.
    value, end = _scan_once(text, 0)
    return value if end == len(text) else json.loads(text)


ACCESS_TOKEN_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})
# Parsed, acceptable access-token headers by their base64url segment: tokens from one
# broker share a handful of headers, so the JSON parse and checks happen once per kid.
_header_cache: dict[bytes, tuple[str, str]] = {}

# Other tokens a broker signs, by header typ, named in the refusal so that whoever sent
# one learns what they sent rather than a misleading algorithm complaint.
_OTHER_TYPES: Final = {
    "rt+jwt": "a refresh token",
    "logout+jwt": "a logout token",
    "revocations+jwt": "a revocation feed",
}
_ID_TOKEN_CLAIMS: Final = ("nonce", "at_hash", "c_hash", "azp")


def _not_an_access_token(typ: Any, payload_segment: bytes) -> WrongTokenType:
    """The refusal for a header whose typ is not at+jwt: say what the token is instead."""
    kind = _OTHER_TYPES.get(typ.lower()) if isinstance(typ, str) else None
    if kind is None and (typ is None or (isinstance(typ, str) and typ.upper() == "JWT")):
        # Untyped or plain "JWT": an OIDC ID token looks like one (OIDC Core §2). The
        # payload is only peeked at to word the refusal; nothing trusts it.
        try:
            payload = json.loads(_b64decode(payload_segment))
        except (ValueError, MalformedToken):
            payload = None
        if isinstance(payload, dict) and (
            any(name in payload for name in _ID_TOKEN_CLAIMS)
            or ("client_id" not in payload and "scope" not in payload and "aud" in payload)
        ):
            kind = "an ID token"
    if kind is not None:
        return WrongTokenType(f"the token is {kind}, not an access token")
    return WrongTokenType("the token is not an access token (typ must be at+jwt)")


def _load_header(segment: bytes) -> dict[str, Any]:
    try:
        header = json.loads(_b64decode(segment))
    except ValueError:
        raise MalformedToken("the token header is not JSON") from None
    if not isinstance(header, dict):
        raise MalformedToken("the token header is not a JSON object")
    if "crit" in header:  # RFC 7515 §4.1.11: we understand no extensions
        raise MalformedToken("the token header has unsupported critical parameters")
    return header


def _alg_and_kid(header: dict[str, Any]) -> tuple[str, str]:
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in SUPPORTED_ALGORITHMS:
        raise UnsupportedAlgorithm("the token's algorithm is not allowed")
    if not isinstance(kid, str) or not kid:
        raise MalformedToken("the token header has no kid")
    return alg, kid


def _parse_header(segment: bytes, payload_segment: bytes) -> tuple[str, str]:
    header = _load_header(segment)
    typ = header.get("typ")
    # The type first: a refresh token (HS256) is refused as what it is, not for its alg.
    if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
        raise _not_an_access_token(typ, payload_segment)
    alg, kid = _alg_and_kid(header)
    if len(_header_cache) >= 256:
        _header_cache.clear()
    _header_cache[segment] = (alg, kid)
    return alg, kid


def _split(token: str | bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(signing input, header, payload, signature) segments of a compact JWS."""
    if isinstance(token, str):
        if len(token) > MAX_TOKEN_BYTES:
            raise MalformedToken("the token is too large")
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise MalformedToken("the token is not ASCII") from None
    elif isinstance(token, bytes):
        if len(token) > MAX_TOKEN_BYTES:
            raise MalformedToken("the token is too large")
        raw = token
    else:
        raise MalformedToken("the token is not a string")
    signed, _, sig_segment = raw.rpartition(b".")
    header_segment, _, payload_segment = signed.partition(b".")
    if not header_segment or not payload_segment or b"." in payload_segment:
        raise MalformedToken("the token is not a compact JWS")
    return signed, header_segment, payload_segment, sig_segment


def _verified_payload(
    keys: KeySet, alg: str, kid: str, signed: bytes, payload_segment: bytes, sig_segment: bytes
) -> dict[str, Any]:
    key = keys.get(kid)
    if key is None:
        raise UnknownKey(kid)
    if key.alg != alg:
        raise UnsupportedAlgorithm("the token's algorithm is not that of its key")
    try:
        key.verify(_b64decode(sig_segment), signed)
    except (InvalidSignature, ValueError):
        raise BadSignature("the token signature is invalid") from None
    try:
        payload = _json_object(_b64decode(payload_segment).decode())
    except (ValueError, StopIteration):
        raise MalformedToken("the token payload is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedToken("the token payload is not a JSON object")
    return payload


def verify_signature(token: str | bytes, keys: KeySet) -> dict[str, Any]:
    """Check the compact JWS of an access token and return its payload; no claim is
    looked at."""
    signed, header_segment, payload_segment, sig_segment = _split(token)
    parsed = _header_cache.get(header_segment)
    alg, kid = parsed if parsed is not None else _parse_header(header_segment, payload_segment)
    return _verified_payload(keys, alg, kid, signed, payload_segment, sig_segment)


def check_form(token: str | bytes) -> str:
    """The structural checks that need no key (compact JWS, header, typ, alg): lets a
    validator without a key set still refuse garbage as 401 rather than 503. Returns
    the kid."""
    _signed, header_segment, payload_segment, _sig = _split(token)
    parsed = _header_cache.get(header_segment)
    return (parsed if parsed is not None else _parse_header(header_segment, payload_segment))[1]


def verify_typed_jws(token: str | bytes, keys: KeySet, typ: str) -> dict[str, Any]:
    """Check a compact JWS whose header `typ` must be `typ` (RFC 8725 §3.11: explicit
    typing keeps a logout token or a signed feed from passing as anything else)."""
    signed, header_segment, payload_segment, sig_segment = _split(token)
    header = _load_header(header_segment)
    found = header.get("typ")
    if not isinstance(found, str) or found.lower() not in (typ, "application/" + typ):
        raise WrongTokenType(f"the token is not of type {typ}")
    alg, kid = _alg_and_kid(header)
    return _verified_payload(keys, alg, kid, signed, payload_segment, sig_segment)


_STRING_CLAIMS: Final = (
    "sub",
    "jti",
    "client_id",
    "scope",
    "sid",
    "fam",
    "email",
    "name",
    "sg_login",
)
_NUMERIC_CLAIMS: Final = ("exp", "nbf", "iat", "auth_time")


def check_claims(
    payload: dict[str, Any],
    *,
    issuer: str,
    audience: str | Collection[str],
    now: float,
    leeway: float = DEFAULT_LEEWAY,
    required_claims: Collection[str] = REQUIRED_CLAIMS,
) -> AccessTokenClaims:
    """RFC 9068 §4 / RFC 7519 §4.1 checks on a verified payload.

    Written out flat rather than claim by claim through helpers: this runs once per
    new token on the cold path, where every microsecond shows in the benchmark.
    """
    get: Callable[[str], Any] = payload.get
    iss = get("iss")
    if iss != issuer:
        if iss.__class__ is not str:
            raise InvalidClaim("iss")
        raise WrongIssuer("the token was issued by someone else")
    aud_claim = get("aud")
    if aud_claim.__class__ is str:
        aud: tuple[str, ...] = (aud_claim,)
    elif aud_claim.__class__ is list and all(a.__class__ is str for a in aud_claim):
        aud = tuple(aud_claim)
    elif aud_claim is None and "aud" not in required_claims:
        aud = ()
    else:
        raise InvalidClaim("aud")
    if audience.__class__ is str:
        if audience not in aud:
            raise WrongAudience("the token is not meant for this audience")
    elif not any(a in audience for a in aud):
        raise WrongAudience("the token is not meant for this audience")
    for name in _STRING_CLAIMS:
        value = get(name)
        if value.__class__ is not str and (value is not None or name in required_claims):
            raise InvalidClaim(name)
    for name in _NUMERIC_CLAIMS:
        value = get(name)
        cls = value.__class__
        if cls is not int and cls is not float and (value is not None or name in required_claims):
            raise InvalidClaim(name)  # bools and strings are not NumericDates
    exp = get("exp")
    if exp is not None and now >= exp + leeway:
        raise ExpiredToken(exp)
    nbf = get("nbf")
    if nbf is not None and nbf > now + leeway:
        raise NotYetValid("the token is not valid yet")
    iat = get("iat")
    if iat is not None and iat > now + leeway:
        raise NotYetValid("the token was issued in the future")
    sg_user_id = get("sg_user_id")
    if sg_user_id.__class__ is not int and (
        sg_user_id is not None or "sg_user_id" in required_claims
    ):
        raise InvalidClaim("sg_user_id")
    return AccessTokenClaims(payload, aud)


def verify_access_token(
    token: str | bytes,
    keys: KeySet,
    *,
    issuer: str,
    audience: str | Collection[str],
    clock: Clock = time.time,
    leeway: float = DEFAULT_LEEWAY,
    required_claims: Collection[str] = REQUIRED_CLAIMS,
) -> AccessTokenClaims:
    """Verify a broker access token against `keys`; raise an `InvalidToken` otherwise."""
    payload = verify_signature(token, keys)
    return check_claims(
        payload,
        issuer=issuer,
        audience=audience,
        now=clock(),
        leeway=leeway,
        required_claims=required_claims,
    )
