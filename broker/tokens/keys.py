"""Signing keys: generation, the next → current → retired lifecycle, the JWKS, and signing.

- *next*: published in the JWKS but not signing, so every validator has it cached before
  the first token signed with it arrives (published at least `jwks_max_age` ahead; a
  rotation only ever promotes a next key that was already there, never one it makes);
- *current*: signs; exactly one per algorithm;
- *retired*: still published until every token it signed has expired (`drop_after`),
  then deleted.

The lifecycle rules (`promotion`, `retire_refusal`) are pure functions of the key records;
the store offers only reads, inserts and one compare-and-swap of states
(`KeyStore.promote_key_if`). Private keys live in the store sealed under the key-encryption
key (`crypto.Sealer`), the kid as associated data. Every process reloads the key set from
the store at least every `reload_interval` (a fraction of the JWKS cache period), and at
once when it meets a kid it does not know, so replicas agree on the signing key within one
JWKS cache period.
A separate HS256 key (use `rt`) MACs refresh tokens: only the broker ever verifies them, and
a MAC keeps the refresh grant at one public-key signature.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey, OctKey, RSAKey

from broker.events import audit
from broker.store import KeyRecord, KeyState, KeyStore, ms
from broker.tokens.crypto import Sealer
from broker.tokens.jws import JwsKey

ID_TOKEN_ALG = "RS256"
REFRESH_ALG = "HS256"

AnyKey = RSAKey | ECKey | OctKey


class KeyError_(Exception):
    """No usable key (store empty, or sealed under an unknown key-encryption key)."""


class KeyRefused(Exception):
    """A lifecycle step the rules refuse (retiring the signing key, rotating without a
    published next key); the message says what to do instead."""


def _signing(records: list[KeyRecord], alg: str) -> list[KeyRecord]:
    return [r for r in records if r.use == "sig" and r.alg == alg]


def promotion(records: list[KeyRecord], alg: str) -> tuple[KeyRecord | None, KeyRecord | None]:
    """(current, next) signing keys of `alg`: a rotation promotes that next key and
    retires that current one. Next None: there is nothing published to promote."""
    keys = _signing(records, alg)
    current = next((r for r in keys if r.state is KeyState.CURRENT), None)
    upcoming = next((r for r in keys if r.state is KeyState.NEXT), None)
    return current, upcoming


def retire_refusal(records: list[KeyRecord], kid: str) -> str | None:
    """Why `kid` may not be retired, or None. A current key signs: rotate first. A next
    key may go only because `KeyManager.retire` publishes a new next key in its place,
    so a later rotation still promotes a key validators have already seen."""
    target = next((r for r in records if r.kid == kid and r.use == "sig"), None)
    if target is None:
        return f"no signing key with kid {kid!r}"
    if target.state is KeyState.CURRENT:
        return f"key {kid} is signing; run `token-broker keys rotate` first"
    return None


@dataclass(frozen=True, slots=True)
class LoadedKey:
    record: KeyRecord
    key: AnyKey
    jws: JwsKey

    @property
    def kid(self) -> str:
        return self.record.kid


def _generate(alg: str) -> AnyKey:
    params: Any = {"alg": alg, "use": "sig"}
    if alg == "RS256":
        return RSAKey.generate_key(2048, parameters=params, auto_kid=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=params, auto_kid=True)
    if alg == REFRESH_ALG:
        return OctKey.generate_key(256, parameters={"alg": alg}, auto_kid=True)
    raise ValueError(f"unsupported key algorithm {alg}")


def _import(alg: str, data: dict[str, Any]) -> AnyKey:
    if alg == "RS256":
        return RSAKey.import_key(data)
    if alg == "ES256":
        return ECKey.import_key(data)
    return OctKey.import_key(data)


class KeyManager:
    """The process's view of the key set, refreshed from the store."""

    def __init__(
        self,
        store: KeyStore,
        sealer: Sealer,
        *,
        clock: Callable[[], datetime],
        signing_alg: str = "RS256",
        rotation_interval: timedelta = timedelta(days=30),
        retire_after: timedelta = timedelta(minutes=20),
        reload_interval: timedelta = timedelta(seconds=60),
        publish_lead: timedelta = timedelta(seconds=300),
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._clock = clock
        self.signing_alg = signing_alg
        self.algs = sorted({signing_alg, ID_TOKEN_ALG})
        self._rotation_interval = rotation_interval
        self._retire_after = retire_after
        """How long a retired key stays published: the longest token lifetime it signed
        plus one JWKS cache period."""
        self._reload_interval = reload_interval
        self.publish_lead = publish_lead
        """How long a next key should have been published before it signs (the JWKS
        cache period): promoting a younger one is allowed, with a warning."""
        self._lock = threading.Lock()
        self._keys: dict[str, LoadedKey] = {}
        self._current: dict[tuple[str, str], LoadedKey] = {}
        self._loaded_at: datetime | None = None
        self._jwks: dict[str, Any] = {"keys": []}

    # --- loading ------------------------------------------------------------------------------
    def _unseal(self, record: KeyRecord) -> AnyKey:
        data = json.loads(self._sealer.open(record.private_jwk, f"key:{record.kid}"))
        return _import(record.alg, data)

    def _new_record(self, alg: str, state: KeyState, now: datetime, use: str) -> KeyRecord:
        key = _generate(alg)
        kid = key.kid
        assert kid is not None
        sealed = self._sealer.seal(json.dumps(key.as_dict(private=True)).encode(), f"key:{kid}")
        return KeyRecord(
            kid=kid,
            alg=alg,
            state=state,
            private_jwk=sealed,
            created_at=now,
            activated_at=now if state is KeyState.CURRENT else None,
            use=use,
        )

    def ensure_keys(self) -> None:
        """First start: create a current and a next key per algorithm, and the refresh MAC
        key. Concurrent first starts agree through `Store.bootstrap_keys`."""
        now = ms(self._clock())
        records = self._store.list_keys()
        if not any(r.use == "sig" for r in records):
            fresh = []
            for alg in self.algs:
                fresh.append(self._new_record(alg, KeyState.CURRENT, now, "sig"))
                fresh.append(self._new_record(alg, KeyState.NEXT, now, "sig"))
            records = self._store.bootstrap_keys(fresh)
        if not any(r.use == "rt" for r in records):
            records = self._store.bootstrap_keys(
                [self._new_record(REFRESH_ALG, KeyState.CURRENT, now, "rt")]
            )
        for alg in self.algs:  # e.g. ES256 selected after an RS256-only start
            if not any(
                r.alg == alg and r.use == "sig" and r.state is KeyState.CURRENT for r in records
            ):
                self._store.add_key(self._new_record(alg, KeyState.CURRENT, now, "sig"))
                self._store.add_key(self._new_record(alg, KeyState.NEXT, now, "sig"))
        self.reload()

    def reload(self) -> None:
        records = self._store.list_keys()
        now = ms(self._clock())
        keys: dict[str, LoadedKey] = {}
        for record in records:
            if record.drop_after is not None and record.drop_after <= now:
                continue
            existing = self._keys.get(record.kid)
            if existing is not None:
                keys[record.kid] = LoadedKey(record, existing.key, existing.jws)
            else:
                key = self._unseal(record)
                keys[record.kid] = LoadedKey(record, key, JwsKey(record.kid, record.alg, key))
        published = [
            lk.key.as_dict(private=False) for lk in keys.values() if lk.record.use == "sig"
        ]
        current: dict[tuple[str, str], LoadedKey] = {}
        for lk in keys.values():
            if lk.record.state is KeyState.CURRENT:
                current.setdefault((lk.record.alg, lk.record.use), lk)
        with self._lock:
            self._keys = keys
            self._current = current
            self._jwks = {"keys": published}
            self._loaded_at = now

    def reload_due(self) -> bool:
        """Whether `maybe_reload` would go to the store: never loaded, or loaded more than
        `reload_interval` ago. Reads no store (the JWKS route asks on the event loop)."""
        loaded_at = self._loaded_at
        return loaded_at is None or self._clock() - loaded_at >= self._reload_interval

    def maybe_reload(self) -> None:
        if self._loaded_at is None:
            # Never loaded (the store was down at start-up): bootstrap now.
            self.ensure_keys()
            return
        if self.reload_due():
            self.reload()

    # --- queries --------------------------------------------------------------------------------
    def jwks(self) -> dict[str, Any]:
        self.maybe_reload()
        return self._jwks

    def published(self) -> dict[str, Any]:
        """The JWKS as last loaded, without touching the store (served while it is down)."""
        return self._jwks

    def current(self, alg: str | None = None, use: str = "sig") -> LoadedKey:
        alg = alg or self.signing_alg
        self.maybe_reload()
        found = self._current.get((alg, use))
        if found is None:
            raise KeyError_(f"no current {alg} key")
        return found

    def get(self, kid: str) -> LoadedKey | None:
        found = self._keys.get(kid)
        if found is None:
            # Another process may have rotated: look once in the store.
            self.reload()
            found = self._keys.get(kid)
        drop_after = found.record.drop_after if found is not None else None
        if drop_after is not None and drop_after <= ms(self._clock()):
            # Dropped keys verify nothing, even before the next reload forgets them.
            return None
        return found

    def records(self) -> list[KeyRecord]:
        return self._store.list_keys()

    # --- signing and verifying -------------------------------------------------------------------
    def sign(self, claims: dict[str, Any], typ: str, alg: str | None = None) -> str:
        return self.current(alg).jws.sign(claims, typ)

    def sign_refresh(self, claims: dict[str, Any], typ: str) -> str:
        return self.current(REFRESH_ALG, use="rt").jws.sign(claims, typ)

    def verify(self, token: str, *, use: str, typ: str) -> dict[str, Any]:
        """Signature and header checks only; the caller checks claims against the store.

        The algorithm comes from our key record, never from the token header.
        Raises ValueError on anything wrong.
        """
        if len(token) > 8192 or token.count(".") != 2:
            raise ValueError("malformed token")
        kid, header_typ = _peek_header(token)
        lk = self.get(kid) if kid else None
        if lk is None or lk.record.use != use:
            raise ValueError("unknown key")
        if header_typ != typ:
            raise ValueError("wrong token type")
        _header, claims = lk.jws.verify(token)
        return claims

    # --- lifecycle ---------------------------------------------------------------------------
    def rotate(self, alg: str | None = None) -> tuple[str, str]:
        """Promote next to current, retire the old current, publish a new next.
        Returns (new current kid, new next kid). Never promotes a key made here: without
        a published next key it publishes one and refuses (`KeyRefused`)."""
        alg = alg or self.signing_alg
        now = ms(self._clock())
        for _ in range(5):
            current, upcoming = promotion(self._store.list_keys(), alg)
            if upcoming is None:
                self._store.add_key(self._new_record(alg, KeyState.NEXT, now, "sig"))
                self.reload()
                raise KeyRefused(
                    f"there was no published next {alg} key to promote; one is published "
                    f"now: rotate again after {int(self.publish_lead.total_seconds())} s"
                )
            new_next = self._new_record(alg, KeyState.NEXT, now, "sig")
            expected = current.kid if current else None
            if self._store.promote_key_if(
                upcoming.kid, current=expected, new_next=new_next, at=now
            ):
                if current is not None:
                    self._store.set_drop_after(current.kid, now + self._retire_after)
                self.reload()
                audit(
                    "key_rotated",
                    alg=alg,
                    kid=upcoming.kid,
                    previous_kid=expected,
                    next_kid=new_next.kid,
                )
                return upcoming.kid, new_next.kid
        raise KeyError_("key rotation kept racing with another process; try again")

    def young_next_keys(self) -> list[tuple[str, int]]:
        """(kid, seconds published) of next keys published for less than the JWKS cache
        period: validators holding a cached JWKS may refuse their tokens until they
        refetch (well-behaved ones do on a new kid)."""
        now = ms(self._clock())
        return [
            (r.kid, int((now - r.created_at).total_seconds()))
            for r in self._store.list_keys()
            if r.use == "sig"
            and r.state is KeyState.NEXT
            and now - r.created_at < self.publish_lead
        ]

    def retire(self, kid: str) -> bool:
        """Retire a key (published until every token it signed has expired). Refused
        for the signing key; a retired next key is replaced by a new next key at once."""
        records = self._store.list_keys()
        refusal = retire_refusal(records, kid)
        if refusal is not None:
            raise KeyRefused(refusal)
        now = ms(self._clock())
        target = next(r for r in records if r.kid == kid)
        ok = self._store.retire_key(kid, now, now + self._retire_after)
        if ok and target.state is KeyState.NEXT:
            self._store.add_key(self._new_record(target.alg, KeyState.NEXT, now, "sig"))
        self.reload()
        audit("key_retired", outcome="success" if ok else "not_found", kid=kid)
        return ok

    def rotate_if_due(self) -> bool:
        """Automatic rotation: when the current key has signed for `rotation_interval`."""
        if self._rotation_interval <= timedelta(0):
            return False
        now = self._clock()
        rotated = False
        for alg in self.algs:
            lk = self.current(alg)
            started = lk.record.activated_at or lk.record.created_at
            if now - started >= self._rotation_interval:
                try:
                    self.rotate(alg)
                except KeyRefused:
                    continue  # a next key is published now; the next run promotes it
                rotated = True
        return rotated


def _peek_header(token: str) -> tuple[str | None, str | None]:
    head = token.split(".", 1)[0]
    try:
        data = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: deeply nested JSON ("[[[[...") fits well within the size bound.
        raise ValueError("malformed header") from None
    if not isinstance(data, dict):
        raise ValueError("malformed header")
    kid, typ = data.get("kid"), data.get("typ")
    return (kid if isinstance(kid, str) else None, typ if isinstance(typ, str) else None)
