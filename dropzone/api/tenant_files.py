"""``dropzone tenant add/rotate``: write ``<config>/tenants/<name>.yaml`` with a new client id and
the scrypt hash of a new client secret. The secret itself is returned once and never written."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dropzone.api.credentials import hash_secret, new_client_id, new_client_secret
from dropzone.config import TENANT_NAME
from dropzone.errors import UsageError

_HASH_LINE = re.compile(r"^(?P<lead>[ \t]+client_secret_hash:[ \t]*)\S.*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    tenant: str
    client_id: str
    client_secret: str = field(default="", repr=False)
    path: Path = Path()

    def as_json(self) -> dict[str, str]:
        return {"tenant": self.tenant, "client_id": self.client_id, "client_secret": self.client_secret}


def _check_name(name: str) -> None:
    if not TENANT_NAME.match(name):
        raise UsageError("tenant names are lower-case letters, digits, '.', '_' or '-' (max 63)")


def _write_atomically(path: Path, text: str, *, exclusive: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if exclusive:
            os.link(tmp, path)  # fails if the file appeared meanwhile: never overwrite a tenant
        else:
            os.replace(tmp, path)
    except FileExistsError:
        raise UsageError(f"{path} already exists; use `dropzone tenant rotate`") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def add_tenant(config_dir: Path, name: str, display_name: str | None = None) -> IssuedCredentials:
    _check_name(name)
    path = config_dir / "tenants" / f"{name}.yaml"
    if path.exists():
        raise UsageError(f"{path} already exists; use `dropzone tenant rotate {name}` for a new secret")
    client_id, secret = new_client_id(name), new_client_secret()
    body: dict[str, Any] = {
        "name": name,
        "display_name": display_name or name,
        "api": {"client_id": client_id, "client_secret_hash": hash_secret(secret)},
    }
    text = (
        f"# Tenant {name}, written by `dropzone tenant add`. The API client secret is not stored here,\n"
        "# only its scrypt hash; `dropzone tenant rotate` issues a new one.\n"
        + yaml.safe_dump(body, sort_keys=False)
    )
    _write_atomically(path, text, exclusive=True)
    return IssuedCredentials(name, client_id, secret, path)


def rotate_secret(config_dir: Path, name: str) -> IssuedCredentials:
    """New secret (same client id); the old secret and tokens issued for it stop working."""
    _check_name(name)
    path = config_dir / "tenants" / f"{name}.yaml"
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
    except FileNotFoundError:
        raise UsageError(f"no tenant file {path}; use `dropzone tenant add {name}`") from None
    except yaml.YAMLError as err:
        raise UsageError(f"{path} is not valid YAML ({type(err).__name__})") from err
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping at the top level")
    api = data.get("api")
    if api is not None and not isinstance(api, dict):
        raise UsageError(f"{path}: 'api' must be a mapping")
    api = dict(api or {})
    if api.get("client_secret_env") or api.get("client_secret_file"):
        raise UsageError(
            f"{path}: this tenant's secret comes from client_secret_env/client_secret_file; "
            "change it there (or remove that key to let `rotate` manage a hash)"
        )
    secret = new_client_secret()
    new_hash = hash_secret(secret)
    client_id = api.get("client_id") or new_client_id(name)
    if api.get("client_id") and _HASH_LINE.search(text) and len(_HASH_LINE.findall(text)) == 1:
        # Edit the one line so comments and layout in the file survive.
        new_text = _HASH_LINE.sub(lambda m: m.group("lead") + new_hash, text)
    else:
        api.update(client_id=client_id, client_secret_hash=new_hash)
        data["api"] = api
        new_text = yaml.safe_dump(data, sort_keys=False)
    check = yaml.safe_load(new_text)
    if not isinstance(check, dict) or (check.get("api") or {}).get("client_secret_hash") != new_hash:
        raise UsageError(f"{path}: could not update api.client_secret_hash safely; edit the file by hand")
    _write_atomically(path, new_text, exclusive=False)
    return IssuedCredentials(name, client_id, secret, path)
