"""SMART Backend Services client authentication: a JWT client assertion signed with the
tenant's private key, checked against the public keys in its ``api.jwks`` / ``api.jwks_file``.

Checks (SMART App Launch 2.x, "Backend Services"): ``iss`` = ``sub`` = the client id; ``aud`` =
this token endpoint's URL; ``exp`` no more than five minutes ahead; ``jti`` not seen before
while the assertion is valid; signature RS384 or ES384 (RS256/ES256 also accepted) by a key of
the tenant whose ``kid`` matches when one is given.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import jwt

from dropzone.api.credentials import ClientCredential, CredentialRegistry

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS384", "ES384", "RS256", "ES256")
MAX_LIFETIME = 300
LEEWAY = 30


class AssertionRefused(Exception):
    """The client assertion was refused; ``reason`` is safe to log and show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AssertionVerifier:
    def __init__(self, registry: CredentialRegistry, clock: Callable[[], float] = time.time) -> None:
        self._registry = registry
        self._clock = clock
        self._seen: dict[str, float] = {}  # jti -> until when it must stay unique
        self._lock = threading.Lock()

    def verify(self, assertion: str, audiences: Iterable[str]) -> ClientCredential:
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as err:
            raise AssertionRefused("the client assertion is not a valid JWT") from err
        issuer, subject = unverified.get("iss"), unverified.get("sub")
        if not isinstance(issuer, str) or issuer != subject:
            raise AssertionRefused("the client assertion's iss and sub must both be the client id")
        cred = self._registry.lookup(issuer)
        if cred is None or not cred.jwks:
            raise AssertionRefused("unknown client, or no public keys are registered for it")
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AssertionRefused(f"the assertion must be signed with one of {', '.join(ALGORITHMS)}")
        kid = header.get("kid")
        candidates = [k for k in cred.jwks if kid is None or k.get("kid") == kid]
        if not candidates:
            raise AssertionRefused("no registered key matches the assertion's kid")
        claims = self._decode(assertion, candidates, alg, issuer, list(audiences))
        now = self._clock()
        exp = claims["exp"]
        if not isinstance(exp, int | float) or exp > now + MAX_LIFETIME + LEEWAY:
            raise AssertionRefused("the client assertion may be valid for at most five minutes")
        if exp < now - LEEWAY:
            raise AssertionRefused("the client assertion has expired")
        self._remember(str(claims["jti"]), issuer, exp)
        return cred

    def _decode(self, assertion: str, keys: list[dict], alg: str, issuer: str, audiences: list[str]) -> dict:
        last: Exception | None = None
        for jwk in keys:
            try:
                key = jwt.PyJWK(jwk, algorithm=alg)
                return jwt.decode(
                    assertion,
                    key,
                    algorithms=[alg],
                    audience=audiences,
                    issuer=issuer,
                    options={"require": ["exp", "jti", "iss", "sub", "aud"], "verify_exp": False},
                )
            except (jwt.PyJWTError, ValueError, TypeError) as err:
                last = err
        if isinstance(last, jwt.InvalidAudienceError):
            raise AssertionRefused("the client assertion's aud must be this token endpoint's URL") from last
        raise AssertionRefused("the client assertion's signature or claims are not valid") from last

    def _remember(self, jti: str, issuer: str, exp: float) -> None:
        now = self._clock()
        key = f"{issuer}\x00{jti}"
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            if self._seen.get(key, 0) > now:
                raise AssertionRefused("this client assertion (jti) was already used")
            self._seen[key] = exp + LEEWAY
