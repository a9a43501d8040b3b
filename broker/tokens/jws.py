"""Compact JWS (RFC 7515 §7.1) of the broker's own tokens, straight over `cryptography`.

joserfc builds an algorithm registry, validates every header field, looks the key up
and checks it again, and copies the payload for each token it signs or checks: about
50,000 instructions per token beyond the signature, and a refresh grant signs three and
checks one. The broker only ever signs its own claims with keys the key manager loaded,
in three algorithms (RS256, ES256, HS256), and only checks tokens against the key their
`kid` names, with that key's algorithm: that much is done here. Tests hold the tokens
equal to joserfc's (and readable by PyJWT), and the checks equal to joserfc's on valid,
tampered and malformed tokens. Base64url decoding is joserfc's own (canonical only).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from joserfc.jwk import ECKey, OctKey, RSAKey
from joserfc.util import urlsafe_b64decode, urlsafe_b64encode

AnyKey = RSAKey | ECKey | OctKey

_ES256_SIZE = 32  # bytes of r and of s on P-256


class JwsKey:
    """Signing and checking with one loaded key, in its one algorithm."""

    def __init__(self, kid: str, alg: str, key: AnyKey) -> None:
        self.kid = kid
        self.alg = alg
        self._key = key
        self._headers: dict[str, bytes] = {}
        self._signer: Callable[[bytes], bytes] | None = None
        self._checker: Callable[[bytes, bytes], bool] | None = None

    def header_segment(self, typ: str) -> bytes:
        """The encoded protected header joserfc writes: typ, alg, kid, in that order."""
        segment = self._headers.get(typ)
        if segment is None:
            header = {"typ": typ, "alg": self.alg, "kid": self.kid}
            text = json.dumps(header, ensure_ascii=True, separators=(",", ":"))
            segment = self._headers[typ] = urlsafe_b64encode(text.encode("ascii"))
        return segment

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        payload = json.dumps(claims, ensure_ascii=False, separators=(",", ":"))
        signing_input = self.header_segment(typ) + b"." + urlsafe_b64encode(payload.encode())
        if self._signer is None:
            self._signer = _signer(self.alg, self._key.get_op_key("sign"))
        signature = urlsafe_b64encode(self._signer(signing_input))
        return (signing_input + b"." + signature).decode("ascii")

    def verify(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(header, claims) of a token this key signed; ValueError for anything else: not
        three canonical base64url segments, a header that is no JSON object or names
        another algorithm, a wrong signature, claims that are no JSON object."""
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("not ASCII") from None
        parts = raw.split(b".")
        if len(parts) != 3:
            raise ValueError("not three segments")
        header_segment, payload_segment, signature_segment = parts
        header = _json_object(header_segment)
        if header.get("alg") != self.alg:
            raise ValueError("algorithm mismatch")
        signature = urlsafe_b64decode(signature_segment)
        if self._checker is None:
            self._checker = _checker(self.alg, self._key.get_op_key("verify"))
        if not self._checker(header_segment + b"." + payload_segment, signature):
            raise ValueError("bad signature")
        return header, _json_object(payload_segment)


def _json_object(segment: bytes) -> dict[str, Any]:
    try:
        value = json.loads(urlsafe_b64decode(segment))
    except RecursionError:  # deeply nested JSON fits in a segment
        raise ValueError("too deeply nested") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _signer(alg: str, key: Any) -> Callable[[bytes], bytes]:
    if alg == "RS256":
        return lambda data: bytes(key.sign(data, padding.PKCS1v15(), hashes.SHA256()))
    if alg == "ES256":

        def sign_es256(data: bytes) -> bytes:
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(_ES256_SIZE, "big") + s.to_bytes(_ES256_SIZE, "big")

        return sign_es256
    if alg == "HS256" and key:
        return lambda data: hmac.digest(key, data, "sha256")
    raise ValueError(f"cannot sign with {alg}")


def _checker(alg: str, key: Any) -> Callable[[bytes, bytes], bool]:
    if alg == "RS256":

        def check_rs256(data: bytes, signature: bytes) -> bool:
            try:
                key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return False
            return True

        return check_rs256
    if alg == "ES256":

        def check_es256(data: bytes, signature: bytes) -> bool:
            if len(signature) != 2 * _ES256_SIZE:
                return False
            r = int.from_bytes(signature[:_ES256_SIZE], "big")
            s = int.from_bytes(signature[_ES256_SIZE:], "big")
            try:
                key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                return False
            return True

        return check_es256
    if alg == "HS256" and key:
        return lambda data, signature: hmac.compare_digest(
            hmac.digest(key, data, "sha256"), signature
        )
    raise ValueError(f"cannot check {alg}")
