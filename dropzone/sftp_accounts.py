"""``dropzone sftp-config``: OpenSSH accounts through which each tenant uploads into its own
``incoming/<tenant>/`` folder of a local drop zone.

The recipe (one account per tenant that declares ``sftp:`` in ``config/tenants/<t>.yaml``):

- OpenSSH's built-in ``internal-sftp`` (no shell, no forwarding, no TTY), chrooted into
  ``<jail>/<tenant>``. OpenSSH requires every component of a chroot path to be owned by root and
  not writable by anyone else, so the jail is a root-owned folder outside the zone and the
  tenant's ``incoming/<tenant>`` is bind-mounted into it as ``/incoming``, the only folder the
  tenant can write to. Its ``quarantine/<tenant>`` is bind-mounted read-only as ``/reports``:
  the sender reads its own error reports (``*.error.json``), rejects files and quarantined
  files there, to fix and re-drop. It never sees another tenant, archived/ or the host.
- Files land owned by the tenant's account, group ``service_group`` (the folder is setgid) with
  umask 0007, so the dropzone service can read and move them when it runs as root or as a member
  of that group. Symlink and hard-link requests are refused by internal-sftp.
- Completion: OpenSSH writes uploads in place; the folder watcher acts on close-after-write and on
  a quiet period, and ignores temporary names (``*.filepart`` etc.) until the client renames them.

``render_*`` return text; ``write_bundle`` writes ``sshd_dropzone.conf`` (for
``/etc/ssh/sshd_config.d/``), ``authorized_keys/<user>`` and an idempotent ``setup.sh`` to run as root.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dropzone.config import Settings
from dropzone.errors import ConfigError

UNIX_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
# "<type> <base64> [comment]": plain keys only; options are ours to set ("restrict").
PUBLIC_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}(?: [^\r\n]*)?$"
)
Auth = Literal["key", "password", "key-or-password"]


class TenantSftp(BaseModel):
    """The ``sftp:`` block of a tenant's YAML."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = Field(default=None, description="login name; default dz-<tenant>")
    auth: Auth = "key"
    authorized_keys: list[str] = Field(default_factory=list)
    authorized_keys_file: Path | None = Field(default=None, description="relative to the config folder")
    password_hash_file: Path | None = Field(
        default=None, description="file with a crypt(3) hash (openssl passwd -6), read by setup.sh"
    )


@dataclass(frozen=True, slots=True)
class Account:
    tenant: str
    user: str
    auth: Auth
    public_keys: tuple[str, ...]
    password_hash_file: Path | None


DEFAULT_JAIL_ROOT = Path("/srv/dropzone-sftp")
DEFAULT_KEYS_DIR = Path("/etc/ssh/dropzone/authorized_keys")
DEFAULT_SERVICE_GROUP = "dropzone"


@dataclass(frozen=True, slots=True)
class Layout:
    zone: Path  # the local drop zone the service watches
    jail_root: Path = DEFAULT_JAIL_ROOT
    keys_dir: Path = DEFAULT_KEYS_DIR
    service_group: str = DEFAULT_SERVICE_GROUP
    account_group: str = "dropzone-sftp"

    def jail(self, account: Account) -> Path:
        return self.jail_root / account.tenant


def accounts_from_settings(settings: Settings) -> list[Account]:
    """One account per tenant with an ``sftp:`` block; raises ConfigError listing what is wrong."""
    accounts: list[Account] = []
    problems: list[str] = []
    for name in sorted(settings.tenants):
        raw = (settings.tenants[name].model_extra or {}).get("sftp")
        if raw is None:
            continue
        try:
            spec = TenantSftp.model_validate(raw)
            accounts.append(_account(name, spec, settings.config_dir))
        except ValidationError as err:
            for item in err.errors(include_input=False, include_url=False):
                where = ".".join(str(p) for p in item["loc"])
                problems.append(f"tenants/{name}.yaml: sftp.{where}: {item['msg']}")
        except ConfigError as err:
            problems.append(f"tenants/{name}.yaml: {err}")
    users = [a.user for a in accounts]
    shared = sorted({u for u in users if users.count(u) > 1})
    problems += [f"two tenants use the sftp user '{u}'" for u in shared]
    if problems:
        raise ConfigError("invalid sftp account configuration:\n  " + "\n  ".join(problems))
    return accounts


def _account(tenant: str, spec: TenantSftp, config_dir: Path | None) -> Account:
    user = spec.user or f"dz-{tenant}"
    if not UNIX_USER.match(user):
        raise ConfigError(f"sftp user '{user}' is not a valid login name: set sftp.user (max 32 chars)")
    keys = list(spec.authorized_keys)
    if spec.authorized_keys_file is not None:
        path = spec.authorized_keys_file
        if not path.is_absolute() and config_dir is not None:
            path = config_dir / path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read sftp.authorized_keys_file {path}: {err.strerror}") from err
        keys += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    bad = [i for i, key in enumerate(keys, 1) if not PUBLIC_KEY.match(key.strip())]
    if bad:
        raise ConfigError(f"sftp public key(s) {bad} are not '<type> <base64> [comment]' lines")
    if spec.auth != "password" and not keys:
        raise ConfigError("sftp.auth needs at least one public key (authorized_keys or authorized_keys_file)")
    if spec.auth != "key" and spec.password_hash_file is None:
        raise ConfigError("sftp.auth with a password needs sftp.password_hash_file")
    return Account(tenant, user, spec.auth, tuple(k.strip() for k in keys), spec.password_hash_file)


_METHODS = {"key": "publickey", "password": "password", "key-or-password": "publickey password"}


def render_sshd_config(accounts: list[Account], layout: Layout) -> str:
    lines = [
        "# Generated by `dropzone sftp-config`; re-run it after changing config/tenants/*.yaml.",
        "# Debian/Ubuntu: copy to /etc/ssh/sshd_config.d/, then `sshd -t && systemctl reload ssh`.",
        "# One chrooted internal-sftp account per tenant: no shell, no forwarding, no TTY.",
    ]
    for acc in accounts:
        lines += [
            "",
            f"# tenant {acc.tenant}: writes only into {layout.zone / 'incoming' / acc.tenant}",
            f"Match User {acc.user}",
            f"    ChrootDirectory {_sshd_path(layout.jail(acc))}",
            # -d: start in the upload folder; -u: group-readable files for the service;
            # -P: no links (a link could make the service read or move files it should not).
            "    ForceCommand internal-sftp -d /incoming -u 0007 -P symlink,hardlink",
            f"    AuthorizedKeysFile {_sshd_path(layout.keys_dir)}/%u",
            f"    AuthenticationMethods {_METHODS[acc.auth]}",
            f"    PubkeyAuthentication {'no' if acc.auth == 'password' else 'yes'}",
            f"    PasswordAuthentication {'no' if acc.auth == 'key' else 'yes'}",
            "    AllowTcpForwarding no",
            "    AllowStreamLocalForwarding no",
            "    AllowAgentForwarding no",
            "    X11Forwarding no",
            "    PermitTunnel no",
            "    PermitTTY no",
            "    GatewayPorts no",
        ]
    # sshd ends a Match block at the end of an included file: the main config after the Include
    # still applies to everyone.
    return "\n".join([*lines, ""])


def _sshd_path(path: Path) -> str:
    text = str(path)
    if any(c.isspace() or c in "\"'#%" for c in text):
        raise ConfigError(f"path {text!r} cannot be used in sshd_config (spaces, quotes, # or %)")
    return text


def render_authorized_keys(account: Account) -> str:
    # "restrict" turns off forwarding, PTY and user rc even if the Match block were lost.
    return "".join(f"restrict {key}\n" for key in account.public_keys)


def render_setup_script(accounts: list[Account], layout: Layout) -> str:
    q = shlex.quote
    out = [
        "#!/bin/sh",
        "# Generated by `dropzone sftp-config`. Run as root on the SFTP host; safe to run again.",
        "# Creates the tenants' login accounts, their jails and upload folders, and installs their keys.",
        "set -eu",
        'HERE=$(cd "$(dirname "$0")" && pwd)',
        f"ZONE={q(str(layout.zone))}",
        f"JAIL={q(str(layout.jail_root))}",
        f"KEYS={q(str(layout.keys_dir))}",
        f"SERVICE_GROUP={q(layout.service_group)}",
        f"ACCOUNT_GROUP={q(layout.account_group)}",
        "",
        'getent group "$SERVICE_GROUP" >/dev/null || groupadd --system "$SERVICE_GROUP"',
        'getent group "$ACCOUNT_GROUP" >/dev/null || groupadd --system "$ACCOUNT_GROUP"',
        'install -d -o root -g root -m 0755 "$JAIL" "$KEYS"',
        'mkdir -p "$ZONE/incoming"',
        "",
        "# sshd refuses a chroot (and the login fails) unless every folder on its path is root-owned",
        "# and writable by nobody else.",
        'dir="$JAIL"',
        'while [ "$dir" != / ]; do',
        '  if [ "$(stat -c %u "$dir")" != 0 ] || [ $(( 0$(stat -c %a "$dir") & 022 )) != 0 ]; then',
        '    echo "setup.sh: $dir must be owned by root and not group/world-writable (sshd chroot rule)" >&2',
        "    exit 1",
        "  fi",
        '  dir=$(dirname "$dir")',
        "done",
        "",
        "account() {  # tenant user auth",
        '  tenant=$1 user=$2 auth=$3 jail="$JAIL/$1"',
        '  upload="$ZONE/incoming/$1" reports="$ZONE/quarantine/$1"',
        '  if ! id -u "$user" >/dev/null 2>&1; then',
        "    useradd --system --no-log-init --no-create-home --home-dir /incoming \\",
        '      --shell /usr/sbin/nologin --gid "$ACCOUNT_GROUP" "$user"',
        "  fi",
        "  # '*' = no password but not locked: a locked ('!') account cannot log in with a key either.",
        '  [ "$auth" = key ] && usermod -p "*" "$user"',
        '  install -d -o root -g root -m 0755 "$jail" "$jail/incoming" "$jail/reports"',
        '  mkdir -p "$upload"',
        '  chown "$user:$SERVICE_GROUP" "$upload"',
        '  chmod 2770 "$upload"  # setgid: uploads belong to the service group',
        '  if ! mountpoint -q "$jail/incoming"; then mount --bind "$upload" "$jail/incoming"; fi',
        '  grep -qs " $jail/incoming none bind" /etc/fstab || \\',
        '    echo "$upload $jail/incoming none bind 0 0" >> /etc/fstab',
        "  # Reports: the service writes them (setgid: in its group; its umask, default 022, makes",
        "  # them readable); the tenant reads them through a read-only bind mount.",
        '  mkdir -p "$reports"',
        '  chgrp "$SERVICE_GROUP" "$reports"',
        '  chmod 2775 "$reports"',
        '  if ! mountpoint -q "$jail/reports"; then',
        '    mount --bind "$reports" "$jail/reports"',
        '    mount -o remount,bind,ro "$jail/reports"',
        "  fi",
        '  grep -qs " $jail/reports none bind" /etc/fstab || \\',
        '    echo "$reports $jail/reports none bind,ro 0 0" >> /etc/fstab',
        '  if [ -f "$HERE/authorized_keys/$user" ]; then',
        '    install -o root -g root -m 0644 "$HERE/authorized_keys/$user" "$KEYS/$user"',
        "  fi",
        "}",
        "",
    ]
    for acc in accounts:
        out.append(f"account {q(acc.tenant)} {q(acc.user)} {q(acc.auth)}")
        if acc.password_hash_file is not None:
            # The hash is read here, on the host, so it never passes through dropzone's config or logs.
            out.append(f'usermod -p "$(cat {q(str(acc.password_hash_file))})" {q(acc.user)}')
    out += [
        "",
        'echo "sftp accounts ready; now: sshd -t && systemctl reload ssh"',
        "",
    ]
    return "\n".join(out)


def write_bundle(out_dir: Path, accounts: list[Account], layout: Layout) -> list[Path]:
    """Write the sshd snippet, the keys and setup.sh into ``out_dir``; returns the files written."""
    keys_dir = out_dir / "authorized_keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    written = []
    conf = out_dir / "sshd_dropzone.conf"
    conf.write_text(render_sshd_config(accounts, layout), encoding="utf-8")
    written.append(conf)
    for acc in accounts:
        if acc.public_keys:
            path = keys_dir / acc.user
            path.write_text(render_authorized_keys(acc), encoding="utf-8")
            written.append(path)
    script = out_dir / "setup.sh"
    script.write_text(render_setup_script(accounts, layout), encoding="utf-8")
    script.chmod(0o755)
    written.append(script)
    return written
