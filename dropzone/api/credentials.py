"""Per-tenant API client credentials: the ``api:`` mapping of ``config/tenants/<tenant>.yaml``.

```yaml
api:
  client_id: acme.5f0c3a9e1b7d2c44
  client_secret_hash: scrypt$16384$8$1$<salt>$<hash>   # written by `dropzone tenant add`
  # or, instead of the hash, a reference to where the plaintext lives (never inline):
  # client_secret_env: ACME_API_SECRET
  # client_secret_file: /run/secrets/acme-api
  # SMART Backend Services (optional): the tenant's public keys for client assertions
  # jwks_file: keys/acme.jwks.json        (or jwks: {keys: [...]})
```

Internal readers (``<config>/readers/<name>.yaml``, ``reader_credentials``) authenticate the
same way and live in the same registry, so one client id never names two principals.

Secrets never appear in logs, reprs or error messages; only client ids and tenant names do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dropzone.config import TENANT_NAME, Settings
from dropzone.errors import ConfigError
from dropzone.log import event

_log = logging.getLogger("dropzone.api")

# scrypt with 16 MiB of memory: ~50 ms per check here. Generated secrets have 256 bits of
# entropy, so this mostly protects secrets an operator chose by hand.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_ALLOWED_KEYS = {
    "client_id",
    "client_secret_hash",
    "client_secret_env",
    "client_secret_file",
    "jwks",
    "jwks_file",
}
_SECRET_SOURCES = ("client_secret_hash", "client_secret_env", "client_secret_file")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str, *, n: int = _SCRYPT_N) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${n}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_secret_hash(secret: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            secret.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def check_hash_format(encoded: str) -> bool:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = (int(x) for x in parts[1:4])
        return n >= 2**10 and (n & (n - 1)) == 0 and r >= 1 and p >= 1 and bool(_unb64(parts[5]))
    except ValueError:
        return False


def new_client_id(tenant: str) -> str:
    return f"{tenant}.{secrets.token_hex(8)}"


def new_client_secret() -> str:
    return secrets.token_urlsafe(32)


# A hash nobody can match: unknown client ids cost the same time as wrong secrets.
_DUMMY_HASH = hash_secret(secrets.token_urlsafe(32))


@dataclass(frozen=True, slots=True)
class ClientCredential:
    tenant: str
    client_id: str
    secret_hash: str | None = field(default=None, repr=False)
    secret_plain: str | None = field(default=None, repr=False)
    jwks: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    #: Changes whenever the secret or keys change; tokens carry it, so rotating revokes them.
    fingerprint: str = ""

    def verify(self, secret: str) -> bool:
        if self.secret_hash is not None:
            return verify_secret_hash(secret, self.secret_hash)
        if self.secret_plain is not None:
            return hmac.compare_digest(secret.encode(), self.secret_plain.encode())
        return False


@dataclass(frozen=True, slots=True)
class ReaderCredential:
    """An internal reader (``<config>/readers/<name>.yaml``, parsed by ``reader_credentials``)."""

    reader: str
    client_id: str
    #: The tenants this reader may read; None means every tenant.
    tenants: frozenset[str] | None
    secret_hash: str = field(default="", repr=False)
    #: Covers the client id and secret hash: rotating or removing the reader revokes its tokens.
    fingerprint: str = ""
    # Readers authenticate with a secret only: a client assertion naming a reader finds no keys
    # and is refused like one naming a tenant without keys (smart.AssertionVerifier).
    jwks: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    def verify(self, secret: str) -> bool:
        return verify_secret_hash(secret, self.secret_hash)


Credential = ClientCredential | ReaderCredential


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def credential_from_mapping(
    tenant: str, api: Any, env: Mapping[str, str], base_dir: Path | None, where: str
) -> ClientCredential:
    """Parse one tenant's ``api:`` mapping. Raises ConfigError naming the key, never its value."""
    if not isinstance(api, dict):
        raise ConfigError(f"{where}: 'api' must be a mapping")
    if "client_secret" in api:
        raise ConfigError(
            f"{where}: api.client_secret must not hold a plaintext secret; use client_secret_hash "
            "(dropzone tenant add/rotate), client_secret_env or client_secret_file"
        )
    unknown = sorted(set(api) - _ALLOWED_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown api keys {unknown} (allowed: {sorted(_ALLOWED_KEYS)})")
    client_id = api.get("client_id")
    if not isinstance(client_id, str) or not 3 <= len(client_id) <= 200 or not client_id.isprintable():
        raise ConfigError(f"{where}: api.client_id must be a string of 3-200 printable characters")
    given = [k for k in _SECRET_SOURCES if api.get(k) is not None]
    if len(given) > 1:
        raise ConfigError(f"{where}: give only one of api.{', api.'.join(given)}")
    jwks = _load_jwks(api, base_dir, where)
    if not given and not jwks:
        raise ConfigError(
            f"{where}: api needs client_secret_hash, client_secret_env, client_secret_file or jwks"
        )
    secret_hash = secret_plain = None
    if given == ["client_secret_hash"]:
        secret_hash = str(api["client_secret_hash"])
        if not check_hash_format(secret_hash):
            raise ConfigError(f"{where}: api.client_secret_hash is not a scrypt hash from `dropzone tenant`")
    elif given == ["client_secret_env"]:
        secret_plain = env.get(str(api["client_secret_env"]))
        if not secret_plain:
            raise ConfigError(f"{where}: environment variable {api['client_secret_env']} is not set")
    elif given == ["client_secret_file"]:
        path = _resolve(base_dir, str(api["client_secret_file"]))
        try:
            secret_plain = path.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ConfigError(f"{where}: cannot read api.client_secret_file ({err.strerror})") from err
        if not secret_plain:
            raise ConfigError(f"{where}: api.client_secret_file is empty")
    if secret_plain is not None and len(secret_plain) < 16:
        raise ConfigError(f"{where}: the API client secret must be at least 16 characters")
    material = secret_hash or hashlib.sha256((secret_plain or "").encode()).hexdigest()
    jwks_text = repr(sorted(repr(sorted(k.items())) for k in jwks))
    return ClientCredential(
        tenant=tenant,
        client_id=client_id,
        secret_hash=secret_hash,
        secret_plain=secret_plain,
        jwks=tuple(jwks),
        fingerprint=_fingerprint(client_id, material, jwks_text),
    )


def _resolve(base_dir: Path | None, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


def _load_jwks(api: dict[str, Any], base_dir: Path | None, where: str) -> list[dict[str, Any]]:
    raw: Any = api.get("jwks")
    if api.get("jwks_file") is not None:
        try:
            raw = yaml.safe_load(_resolve(base_dir, str(api["jwks_file"])).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{where}: cannot read api.jwks_file ({err.__class__.__name__})") from err
    if raw is None:
        return []
    keys = raw.get("keys") if isinstance(raw, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, dict) and "kty" in k for k in keys):
        raise ConfigError(f"{where}: api.jwks must be a JWK set ({{keys: [...]}})")
    if any(k.get(private) for k in keys for private in ("d", "p", "q")):
        raise ConfigError(f"{where}: api.jwks holds a private key; give only the public keys")
    return keys


class CredentialRegistry:
    """Client id -> credential for every tenant with an ``api:`` mapping and every reader
    (``<config>/readers/<name>.yaml``, see ``reader_credentials``).

    When settings came from a config folder, the tenant and reader files are re-read (at most
    once a second, only if one changed) so ``dropzone tenant|reader add/rotate/remove`` takes
    effect without a restart; a broken file then keeps the previous credentials and logs an error.
    """

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if env is None else env
        self._config_dir = settings.config_dir
        self._lock = threading.Lock()
        self._checked = 0.0
        self._signature: tuple[tuple[str, int, int], ...] = self._files_signature()
        self._by_id, self._by_tenant, self._by_reader = self._build(
            {name: t.model_extra.get("api") for name, t in settings.tenants.items() if t.model_extra},
            _load_readers(self._config_dir),
        )

    @staticmethod
    def _index(
        creds: list[ClientCredential], readers: list[ReaderCredential]
    ) -> tuple[dict[str, Credential], dict[str, ClientCredential], dict[str, ReaderCredential]]:
        by_id: dict[str, Credential] = {}
        for cred in [*creds, *readers]:
            other = by_id.get(cred.client_id)
            if other is not None:
                raise ConfigError(f"{_owner(other)} and {_owner(cred)} use the same client_id")
            by_id[cred.client_id] = cred
        return by_id, {c.tenant: c for c in creds}, {r.reader: r for r in readers}

    def _build(
        self, mappings: dict[str, Any], readers: list[ReaderCredential]
    ) -> tuple[dict[str, Credential], dict[str, ClientCredential], dict[str, ReaderCredential]]:
        creds = []
        for tenant, api in sorted(mappings.items()):
            if api is None:
                continue
            where = f"tenant {tenant}"
            creds.append(credential_from_mapping(tenant, api, self._env, self._config_dir, where))
        return self._index(creds, readers)

    def _files_signature(self) -> tuple[tuple[str, int, int], ...]:
        if self._config_dir is None:
            return ()
        out = []
        for kind in ("tenants", "readers"):
            folder = self._config_dir / kind
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.yaml")):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                out.append((f"{kind}/{path.name}", st.st_mtime_ns, st.st_size))
        return tuple(out)

    def refresh(self, min_interval: float = 1.0) -> None:
        now = time.monotonic()
        with self._lock:
            if self._config_dir is None or now - self._checked < min_interval:
                return
            self._checked = now
            signature = self._files_signature()
            if signature == self._signature:
                return
            try:
                mappings = {}
                for path in sorted((self._config_dir / "tenants").glob("*.yaml")):
                    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
                    if isinstance(data, dict) and TENANT_NAME.match(path.stem):
                        mappings[path.stem] = data.get("api")
                self._by_id, self._by_tenant, self._by_reader = self._build(
                    mappings, _load_readers(self._config_dir)
                )
            except ConfigError as err:  # messages name keys and files, never values
                event(_log, "api.credentials_reload_failed", logging.ERROR, error=str(err)[:300])
                return
            except (OSError, yaml.YAMLError) as err:  # YAML errors quote the file: class only
                event(_log, "api.credentials_reload_failed", logging.ERROR, error_type=type(err).__name__)
                return
            finally:
                self._signature = signature
            event(
                _log, "api.credentials_reloaded", tenants=len(self._by_tenant), readers=len(self._by_reader)
            )

    def lookup(self, client_id: str) -> Credential | None:
        return self._by_id.get(client_id)

    def for_tenant(self, tenant: str) -> ClientCredential | None:
        return self._by_tenant.get(tenant)

    def for_reader(self, reader: str) -> ReaderCredential | None:
        return self._by_reader.get(reader)

    def authenticate(self, client_id: str, secret: str) -> Credential | None:
        cred = self._by_id.get(client_id)
        if cred is None:
            verify_secret_hash(secret, _DUMMY_HASH)  # same cost as a wrong secret
            return None
        return cred if cred.verify(secret) else None

    def __len__(self) -> int:
        return len(self._by_id)


def _owner(cred: Credential) -> str:
    return f"tenant {cred.tenant}" if isinstance(cred, ClientCredential) else f"reader {cred.reader}"


def _load_readers(config_dir: Path | None) -> list[ReaderCredential]:
    # Imported here: reader_credentials uses this module's hash helpers.
    from dropzone.api.reader_credentials import load_readers

    return load_readers(config_dir)
