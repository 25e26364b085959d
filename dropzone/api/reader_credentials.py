"""Internal read credentials: ``<config>/readers/<name>.yaml``, written by ``dropzone reader add``.

```yaml
name: analytics
client_id: analytics.5f0c3a9e1b7d2c44
client_secret_hash: scrypt$16384$8$1$<salt>$<hash>
tenants: [acme, beta]        # or '*' for every tenant
```

A reader authenticates like a tenant (OAuth2 client credentials) but its token only reads, and
only the tenants listed. The list is looked up on every request, so narrowing it takes effect
without new tokens; the fingerprint covers the client id and secret hash, so ``rotate`` and
``remove`` revoke the tokens already issued. Messages name files and keys, never values.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from dropzone.api.credentials import ReaderCredential, check_hash_format
from dropzone.config import TENANT_NAME
from dropzone.errors import ConfigError

READERS_DIR = "readers"
ALL_TENANTS = "*"
_ALLOWED_KEYS = {"name", "client_id", "client_secret_hash", "tenants"}


def parse_tenants(value: Any, where: str) -> frozenset[str] | None:
    """'*' -> None (every tenant); a non-empty list of tenant names -> that set."""
    if value == ALL_TENANTS:
        return None
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: tenants must be '*' or a non-empty list of tenant names")
    bad = [i for i, name in enumerate(value, 1) if not isinstance(name, str) or not TENANT_NAME.match(name)]
    if bad:
        raise ConfigError(f"{where}: tenants entries {bad} are not tenant names (lower-case, max 63)")
    return frozenset(value)


def reader_from_mapping(name: str, data: Any, where: str) -> ReaderCredential:
    """Parse one reader file's content. Raises ConfigError naming the key, never its value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    if "client_secret" in data:
        raise ConfigError(f"{where}: client_secret must not hold a plaintext secret; use client_secret_hash")
    unknown = sorted(set(data) - _ALLOWED_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown} (allowed: {sorted(_ALLOWED_KEYS)})")
    if data.get("name", name) != name:
        raise ConfigError(f"{where}: name must match the file name")
    client_id = data.get("client_id")
    if not isinstance(client_id, str) or not 3 <= len(client_id) <= 200 or not client_id.isprintable():
        raise ConfigError(f"{where}: client_id must be a string of 3-200 printable characters")
    secret_hash = data.get("client_secret_hash")
    if not isinstance(secret_hash, str) or not check_hash_format(secret_hash):
        raise ConfigError(f"{where}: client_secret_hash is not a scrypt hash from `dropzone reader`")
    tenants = parse_tenants(data.get("tenants"), where)
    fingerprint = hashlib.sha256(f"reader\x00{client_id}\x00{secret_hash}".encode()).hexdigest()[:16]
    return ReaderCredential(name, client_id, tenants, secret_hash, fingerprint)


def reader_files(config_dir: Path | None) -> list[Path]:
    folder = config_dir / READERS_DIR if config_dir is not None else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(folder.glob("*.yaml"))


def load_readers(config_dir: Path | None) -> list[ReaderCredential]:
    """Every reader file of the config folder. Raises ConfigError (file named, no values)."""
    out = []
    for path in reader_files(config_dir):
        where = f"{READERS_DIR}/{path.name}"
        if not TENANT_NAME.match(path.stem):
            raise ConfigError(f"{where}: reader names are lower-case letters, digits, '.', '_', '-'")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:  # the YAML error quotes the file: its class only
            raise ConfigError(f"{where}: not valid YAML ({type(err).__name__})") from err
        except OSError as err:
            raise ConfigError(f"{where}: cannot be read ({err.strerror})") from err
        out.append(reader_from_mapping(path.stem, data, where))
    return out
