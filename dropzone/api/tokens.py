"""Short-lived access tokens: HS256 JWTs naming one principal: a tenant (claim ``tenant``, scope
read and write) or an internal reader (claims ``kind: reader`` and ``reader``, scope read only).
Tokens without ``kind`` are tenant tokens (as issued before readers existed).

The signing key comes from ``api.signing_key`` (env ``DROPZONE_API__SIGNING_KEY``) or
``api.signing_key_file``. Without either, a random key is made at start-up: tokens then die with
the process and are not shared by several API processes (fine for a demo, logged as a warning).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt

from dropzone.api.credentials import ClientCredential, Credential
from dropzone.config import ApiSettings
from dropzone.errors import ConfigError
from dropzone.log import event

_log = logging.getLogger("dropzone.api")

ISSUER = "dropzone"
AUDIENCE = "dropzone-api"
ALGORITHM = "HS256"
SCOPE = "system/*.write system/*.read"
READ_SCOPE = "system/*.read"
TENANT, READER = "tenant", "reader"
MIN_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class TokenClaims:
    #: The tenant's name, or the reader's when ``kind`` is READER.
    name: str
    client_id: str
    fingerprint: str
    expires_at: int
    token_id: str
    kind: str = TENANT

    @property
    def tenant(self) -> str | None:
        """The tenant a tenant token is for; None for a reader's token."""
        return self.name if self.kind == TENANT else None


def scope_for(cred: Credential) -> str:
    return SCOPE if isinstance(cred, ClientCredential) else READ_SCOPE


class InvalidToken(Exception):
    """The bearer token was refused; ``reason`` is safe to show (no token content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_signing_key(api: ApiSettings, config_dir: Path | None = None) -> tuple[bytes, bool]:
    """(key, ephemeral). Raises ConfigError for a key that is too short or unreadable."""
    if api.signing_key is not None and api.signing_key_file is not None:
        raise ConfigError("give only one of api.signing_key and api.signing_key_file")
    if api.signing_key is not None:
        key = api.signing_key.get_secret_value().encode()
        where = "api.signing_key"
    elif api.signing_key_file is not None:
        path = api.signing_key_file
        if not path.is_absolute() and config_dir is not None:
            path = config_dir / path
        try:
            key = path.read_bytes().strip()
        except OSError as err:
            raise ConfigError(f"cannot read api.signing_key_file ({err.strerror})") from err
        where = "api.signing_key_file"
    else:
        event(_log, "api.ephemeral_signing_key", logging.WARNING, hint="set DROPZONE_API__SIGNING_KEY")
        return secrets.token_bytes(MIN_KEY_BYTES), True
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{where} must be at least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)")
    return key, False


class TokenIssuer:
    def __init__(self, key: bytes, ttl_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def issue(self, cred: Credential) -> tuple[str, int]:
        now = int(self._clock())
        who = (
            {"kind": TENANT, "tenant": cred.tenant}
            if isinstance(cred, ClientCredential)
            else {"kind": READER, "reader": cred.reader}
        )
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": cred.client_id,
            **who,
            "cfp": cred.fingerprint,
            "scope": scope_for(cred),
            "iat": now,
            "nbf": now - 5,
            "exp": now + self.ttl_seconds,
            "jti": secrets.token_hex(12),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM), self.ttl_seconds

    def verify(self, token: str) -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                # Expiry is checked below against our clock, so tests can move time.
                options={"require": ["exp", "iat", "sub", "iss", "aud"], "verify_exp": False},
            )
        except jwt.PyJWTError as err:
            raise InvalidToken("the access token is malformed or its signature is not valid") from err
        exp, fp, kind = claims.get("exp"), claims.get("cfp"), claims.get("kind", TENANT)
        if not isinstance(exp, int) or exp <= self._clock():
            raise InvalidToken("the access token has expired; request a new one")
        if kind not in (TENANT, READER):
            raise InvalidToken("the access token names an unknown kind of client")
        name = claims.get(kind)  # the "tenant" or "reader" claim, by kind
        if not isinstance(name, str) or not isinstance(fp, str) or not isinstance(claims["sub"], str):
            raise InvalidToken(f"the access token lacks the {kind} claims")
        return TokenClaims(name, claims["sub"], fp, exp, str(claims.get("jti", "")), kind)
