"""``dropzone reader add/rotate/remove``: write or delete ``<config>/readers/<name>.yaml``.

A new secret is returned once and never written: the file keeps its scrypt hash only. A running
API picks the change up within a second (``CredentialRegistry.refresh``); rotate and remove
revoke the reader's tokens already issued.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dropzone.api.credentials import hash_secret, new_client_id, new_client_secret
from dropzone.api.reader_credentials import ALL_TENANTS, READERS_DIR, parse_tenants, reader_from_mapping
from dropzone.config import TENANT_NAME
from dropzone.errors import ConfigError, UsageError

_HASH_LINE = re.compile(r"^(?P<lead>client_secret_hash:[ \t]*)\S.*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class IssuedReader:
    reader: str
    client_id: str
    client_secret: str = field(default="", repr=False)
    tenants: frozenset[str] | None = None  # None: every tenant
    path: Path = Path()

    def as_json(self) -> dict[str, str]:
        return {"reader": self.reader, "client_id": self.client_id, "client_secret": self.client_secret}


def reader_path(config_dir: Path, name: str) -> Path:
    if not TENANT_NAME.match(name):
        raise UsageError("reader names are lower-case letters, digits, '.', '_' or '-' (max 63)")
    return config_dir / READERS_DIR / f"{name}.yaml"


def parse_tenant_option(text: str) -> frozenset[str] | None:
    """``--tenants acme,beta`` or ``--tenants '*'``; None means every tenant."""
    value: Any = ALL_TENANTS if text.strip() == ALL_TENANTS else [t.strip() for t in text.split(",")]
    try:
        return parse_tenants(value, "--tenants")
    except ConfigError as err:
        raise UsageError(str(err)) from None


def _taken_client_ids(config_dir: Path) -> set[str]:
    """Client ids of every tenant and reader file (unreadable files are the registry's to report)."""
    taken = set()
    for folder, key in (("tenants", "api"), (READERS_DIR, None)):
        for path in sorted((config_dir / folder).glob("*.yaml")):
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue
            holder = data.get(key) if key and isinstance(data, dict) else data
            if isinstance(holder, dict) and isinstance(holder.get("client_id"), str):
                taken.add(holder["client_id"])
    return taken


def _write_atomically(path: Path, text: str, *, exclusive: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if exclusive:
            os.link(tmp, path)  # fails if the file appeared meanwhile: never overwrite a reader
        else:
            os.replace(tmp, path)
    except FileExistsError:
        raise UsageError(f"{path} already exists; use `dropzone reader rotate`") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _tenants_yaml(tenants: frozenset[str] | None) -> str | list[str]:
    return ALL_TENANTS if tenants is None else sorted(tenants)


def add_reader(config_dir: Path, name: str, tenants: frozenset[str] | None) -> IssuedReader:
    path = reader_path(config_dir, name)
    if path.exists():
        raise UsageError(f"{path} already exists; use `dropzone reader rotate {name}` for a new secret")
    taken = _taken_client_ids(config_dir)
    if name in taken:
        # Client ids and reader names are both shown in logs: one string must name one client.
        raise UsageError(f"reader name '{name}' is already a client id in config/; choose another name")
    client_id = new_client_id(name)
    while client_id in taken:  # 64 random bits: practically never, but never two owners
        client_id = new_client_id(name)
    secret = new_client_secret()
    body = {
        "name": name,
        "client_id": client_id,
        "client_secret_hash": hash_secret(secret),
        "tenants": _tenants_yaml(tenants),
    }
    text = (
        f"# Reader {name}, written by `dropzone reader add`: read-only API access to the tenants\n"
        "# below ('*': every tenant). The client secret is not stored here, only its scrypt hash;\n"
        "# `dropzone reader rotate` issues a new one, `dropzone reader remove` revokes the reader.\n"
        + yaml.safe_dump(body, sort_keys=False)
    )
    _write_atomically(path, text, exclusive=True)
    return IssuedReader(name, client_id, secret, tenants, path)


def _read(path: Path, name: str) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except FileNotFoundError:
        raise UsageError(f"no reader file {path}; use `dropzone reader add {name}`") from None
    except yaml.YAMLError as err:
        raise UsageError(f"{path} is not valid YAML ({type(err).__name__})") from err
    if not isinstance(data, dict) or not isinstance(data.get("client_id"), str):
        raise UsageError(f"{path}: expected a mapping with client_id; fix it or remove and add the reader")
    return text, data


def rotate_reader(config_dir: Path, name: str) -> IssuedReader:
    """New secret (same client id and tenants); the old secret and its tokens stop working."""
    path = reader_path(config_dir, name)
    text, data = _read(path, name)
    secret = new_client_secret()
    new_hash = hash_secret(secret)
    if len(_HASH_LINE.findall(text)) == 1:
        # Edit the one line so comments and layout in the file survive.
        new_text = _HASH_LINE.sub(lambda m: m.group("lead") + new_hash, text)
    else:
        new_text = yaml.safe_dump({**data, "client_secret_hash": new_hash}, sort_keys=False)
    try:
        cred = reader_from_mapping(name, yaml.safe_load(new_text), str(path))
    except ConfigError as err:
        raise UsageError(f"{err}; fix the file by hand, then rotate again") from None
    if cred.secret_hash != new_hash:
        raise UsageError(f"{path}: could not update client_secret_hash safely; edit the file by hand")
    _write_atomically(path, new_text, exclusive=False)
    return IssuedReader(name, cred.client_id, secret, cred.tenants, path)


def remove_reader(config_dir: Path, name: str) -> Path:
    """Delete the reader's file: its secret and tokens stop working."""
    path = reader_path(config_dir, name)
    try:
        path.unlink()
    except FileNotFoundError:
        raise UsageError(f"no reader file {path}") from None
    return path


def describe_tenants(tenants: Iterable[str] | None) -> str:
    return "every tenant" if tenants is None else ", ".join(sorted(tenants))
