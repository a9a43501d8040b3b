"""Access-token validations per second on one core: broker_client against PyJWT.

Two workloads, the same token sets for both libraries:
  cold  distinct tokens, each seen once, so every validation checks a signature;
  mix   a realistic service: --users tokens (one per user), presented --presentations
        times in a random order, so most validations are repeats.
broker_client runs twice: with its revocation set off, and on (fed --revocations
entries by a feed read before timing; every call, cache hits included, checks the set).
PyJWT does the fair equivalent of a resource server: the JWKS loaded once (PyJWKSet,
what PyJWKClient caches), then per token the unverified header for kid and typ, and
jwt.decode with the key, RS256 only, issuer, audience and required claims.
`openssl speed rsa2048` gives the machine's RS256 verify ceiling for the ratios.

    .venv/bin/python bench/validate_bench.py            # about a minute
    .venv/bin/python bench/validate_bench.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import jwt
from broker_client import JWKSCache, TokenValidator
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "http://127.0.0.1:8000"
AUDIENCE = "dna-api"
REQUIRED = ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]


def mint(key: rsa.RSAPrivateKey, count: int, now: float) -> list[str]:
    tokens = []
    for i in range(count):
        claims = {
            "iss": ISSUER,
            "sub": str(1000 + i),
            "aud": AUDIENCE,
            "exp": int(now) + 3600,
            "iat": int(now),
            "jti": uuid.uuid4().hex,
            "client_id": "dna-frontend",
            "scope": "openid profile email",
            "sid": uuid.uuid4().hex,
            "auth_time": int(now),
            "email": f"user{i}@example.com",
            "name": f"User {i}",
            "sg_login": f"user{i}",
            "sg_user_id": 1000 + i,
        }
        headers = {"kid": "bench-1", "typ": "at+jwt"}
        tokens.append(jwt.encode(claims, key, algorithm="RS256", headers=headers))
    return tokens


OPEN: list[TokenValidator] = []  # closed after each round: each has a background thread


def ours(jwks: dict[str, Any], revoked: int = 0) -> Callable[[str], Any]:
    """broker_client; with `revoked` > 0 the revocation set is on and holds that many
    entries (none matching the tokens: the cost measured is the check, not a refusal)."""
    now = int(time.time())
    feed = {
        "iss": ISSUER,
        "iat": now,
        "cursor": str(now * 1000),
        "full": True,
        "entries": [
            {("sid", "fam", "jti")[i % 3]: uuid.uuid4().hex, "exp": now + 3600}
            for i in range(revoked)
        ],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("openid-configuration"):
            metadata = {
                "issuer": ISSUER,
                "jwks_uri": ISSUER + "/jwks.json",
                "revocation_feed_endpoint": ISSUER + "/revocations",
            }
            return httpx.Response(200, json=metadata)
        if request.url.path == "/revocations":
            return httpx.Response(200, json=feed)
        return httpx.Response(200, json=jwks, headers={"cache-control": "max-age=3600"})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    validator = TokenValidator(
        ISSUER,
        AUDIENCE,
        jwks=JWKSCache(ISSUER, http_client=client),
        cache_size=100_000,
        revocations=revoked > 0,
        signed_feed=False,
    )
    OPEN.append(validator)
    # The key set (and the feed) are read before timing, as PyJWT's key set is loaded.
    if not validator.refresher.ready.wait(10) or validator.jwks.current() is None:
        raise SystemExit("the validator did not load its key set")
    if revoked and (validator.revocations is None or len(validator.revocations) != revoked):
        raise SystemExit("the validator did not load the revocation feed")
    return validator.validate


def ours_revoking(jwks: dict[str, Any]) -> Callable[[str], Any]:
    return ours(jwks, REVOKED)


REVOKED = 1000


def pyjwt(jwks: dict[str, Any]) -> Callable[[str], Any]:
    key_set = jwt.PyJWKSet.from_dict(jwks)
    options = {"require": REQUIRED}

    def validate(token: str) -> Any:
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "at+jwt":
            raise jwt.InvalidTokenError("typ")
        key = key_set[header["kid"]]
        return jwt.decode(
            token, key, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER, options=options
        )

    return validate


def rate(validate: Callable[[str], Any], tokens: Sequence[str]) -> float:
    start = time.perf_counter()
    for token in tokens:
        validate(token)
    return len(tokens) / (time.perf_counter() - start)


def bare_verify_rate(key: rsa.RSAPrivateKey, tokens: Sequence[str]) -> float:
    public, pad, sha = key.public_key(), padding.PKCS1v15(), hashes.SHA256()
    pairs = []
    for token in tokens:
        signed, _, sig = token.rpartition(".")
        pairs.append((base64.urlsafe_b64decode(sig + "=="), signed.encode()))
    start = time.perf_counter()
    for sig, signed in pairs:
        public.verify(sig, signed, pad, sha)
    return len(pairs) / (time.perf_counter() - start)


def openssl_verify_rate(seconds: int) -> float | None:
    try:
        out = subprocess.run(
            ["openssl", "speed", "-seconds", str(seconds), "rsa2048"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60 + 4 * seconds,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^rsa\s+2048 bits\s+\S+\s+\S+\s+\S+\s+(\S+)", out, re.MULTILINE)
    return float(match.group(1)) if match else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8000, help="distinct tokens, cold run")
    parser.add_argument("--users", type=int, default=1000, help="distinct tokens, mix run")
    parser.add_argument("--presentations", type=int, default=40_000, help="mix run length")
    parser.add_argument("--rounds", type=int, default=5, help="best of this many")
    parser.add_argument("--openssl-seconds", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (Linux)")
    parser.add_argument("--revocations", type=int, default=1000, help="entries in the set")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.users, args.presentations, args.rounds = 1000, 100, 5000, 1
        args.openssl_seconds = 1
    global REVOKED
    REVOKED = max(1, args.revocations)
    if args.cpu is not None:  # openssl inherits the affinity
        os.sched_setaffinity(0, {args.cpu})

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwks = {"keys": [{**jwk, "kid": "bench-1", "alg": "RS256", "use": "sig"}]}
    now = time.time()
    print(f"minting {args.tokens + args.users} RS256 tokens...", flush=True)
    cold_tokens = mint(key, args.tokens, now)
    users = mint(key, args.users, now)
    mix = random.Random(7).choices(users, k=args.presentations)

    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, make in (("ours", ours), ("revoking", ours_revoking), ("pyjwt", pyjwt)):
            # A fresh validator per round: the cold run must start with an empty cache.
            best[f"cold {name}"] = max(best.get(f"cold {name}", 0), rate(make(jwks), cold_tokens))
            best[f"mix {name}"] = max(best.get(f"mix {name}", 0), rate(make(jwks), mix))
        while OPEN:
            OPEN.pop().close()
        best["bare"] = max(best.get("bare", 0), bare_verify_rate(key, cold_tokens[:2000]))
    ossl = openssl_verify_rate(args.openssl_seconds)

    print()
    print(
        f"{'workload':<30}{'broker_client':>15}{'+revocations':>14}{'on/off':>8}"
        f"{'PyJWT':>12}{'ours/PyJWT':>12}"
    )
    for label, kind in (("cold (distinct tokens)", "cold"), ("mix (1 token/user, repeats)", "mix")):
        a, r, b = best[f"{kind} ours"], best[f"{kind} revoking"], best[f"{kind} pyjwt"]
        print(f"{label:<30}{a:>13,.0f}/s{r:>12,.0f}/s{r / a:>8.2f}{b:>10,.0f}/s{a / b:>11.1f}x")
    print(f"(+revocations: {REVOKED:,} entries in the set, checked on every call)")
    print()
    print(f"bare cryptography RS256 verify      {best['bare']:>10,.0f}/s")
    if ossl:
        print(f"openssl speed rsa2048 verify        {ossl:>10,.0f}/s")
        cold_ratio = best["cold ours"] / ossl
        print(f"cold, broker_client / openssl       {cold_ratio:>10.2f}  (target >= 0.5)")
        print(f"cold, PyJWT / openssl               {best['cold pyjwt'] / ossl:>10.2f}")
        print(f"bare cryptography / openssl         {best['bare'] / ossl:>10.2f}")
    else:
        print("openssl speed unavailable: no ratio to the machine's verify ceiling")
    mix_ratio = best["mix ours"] / best["mix pyjwt"]
    print(f"mix, broker_client / PyJWT          {mix_ratio:>10.1f}  (target >= 20)")


if __name__ == "__main__":
    main()
