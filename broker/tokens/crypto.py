"""AES-256-GCM encryption at rest for signing keys and upstream (ShotGrid) tokens.

Each ciphertext is bound to its record by associated data (the record id), so a ciphertext
copied to another record does not decrypt. Key-encryption keys rotate itsdangerous-style:
the first key encrypts, every key decrypts; a short key id in the blob picks the key, so
reading never tries keys at random.

Blob layout: version (1 byte, 1) | key id (4 bytes) | nonce (12 bytes) | ciphertext+tag.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = 1


class DecryptionError(Exception):
    """The blob is corrupt, bound to another record, or written under an unknown key."""


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"broker-kek-id" + key).digest()[:4]


class Sealer:
    """Encrypts with the newest key-encryption key, decrypts with any of them."""

    __slots__ = ("_by_id", "_current", "_current_id")

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key-encryption key is required")
        for key in keys:
            if len(key) != 32:
                raise ValueError("key-encryption keys are 32 bytes (AES-256)")
        self._current = AESGCM(keys[0])
        self._current_id = _key_id(keys[0])
        self._by_id = {_key_id(k): AESGCM(k) for k in reversed(keys)}

    def __repr__(self) -> str:
        return f"Sealer(keys={len(self._by_id)})"

    def seal(self, plaintext: bytes, record_id: str) -> bytes:
        nonce = os.urandom(12)
        ct = self._current.encrypt(nonce, plaintext, record_id.encode())
        return bytes([_VERSION]) + self._current_id + nonce + ct

    def open(self, blob: bytes, record_id: str) -> bytes:
        if len(blob) < 1 + 4 + 12 + 16 or blob[0] != _VERSION:
            raise DecryptionError("not a sealed blob")
        aead = self._by_id.get(blob[1:5])
        if aead is None:
            raise DecryptionError("sealed under a key-encryption key that is not configured")
        try:
            return aead.decrypt(blob[5:17], blob[17:], record_id.encode())
        except InvalidTag:
            raise DecryptionError("ciphertext does not authenticate for this record") from None

    def needs_reseal(self, blob: bytes) -> bool:
        """True when the blob was written under an older key-encryption key."""
        return blob[1:5] != self._current_id
