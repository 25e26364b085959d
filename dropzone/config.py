"""Settings: ``config/dropzone.yaml`` + ``config/tenants/*.yaml``, then environment variables.

Precedence (lowest first): built-in defaults, the YAML files, environment variables, explicit
command-line options. Environment variables are ``DROPZONE_<FIELD>`` for top-level fields and
``DROPZONE_<SECTION>__<FIELD>`` inside a section (``DROPZONE_PIPELINE__LEASE_SECONDS=30``), plus
the standard ``MONGODB_URI``. Secrets are held as ``SecretStr`` so they never print.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from dropzone.errors import ConfigError

TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
Policy = Literal["record", "file"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


StoreKind = Literal["auto", "sqlite", "memory", "mongodb"]


class StoreSettings(_Strict):
    kind: StoreKind = Field(
        default="auto",
        description="auto: MongoDB when mongodb_uri is set, else the embedded SQLite database; "
        "memory: nothing persists (tests, demos)",
    )
    path: str | None = Field(
        default=None,
        description="SQLite database file (default <zone>/.dropzone/dropzone.sqlite for a folder zone, "
        "else ./dropzone-data/dropzone.sqlite)",
    )
    mongodb_uri: SecretStr | None = Field(
        default=None, description="MongoDB connection string; unset = embedded SQLite store"
    )
    database: str = Field(default="dropzone", min_length=1)
    connect_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300, description="how long to look for the MongoDB server before giving up"
    )
    batch_size: int = Field(default=1000, ge=1, le=100_000)


class PipelineSettings(_Strict):
    validation_workers: int = Field(
        default=2, ge=0, le=64, description="processes validating FHIR; 0 validates in the main process"
    )
    batch_size: int = Field(default=500, ge=1, le=100_000)
    policy: Policy = Field(default="record", description="record: load valid records; file: all or nothing")
    lease_seconds: float = Field(default=60.0, gt=0)
    quiet_seconds: float = Field(default=2.0, ge=0)
    rescan_seconds: float = Field(default=30.0, gt=0)
    max_file_bytes: int = Field(default=50 * 2**30, ge=1)
    max_decompressed_bytes: int = Field(default=200 * 2**30, ge=1)
    max_record_bytes: int = Field(default=16 * 2**20, ge=1024)
    max_report_errors: int = Field(default=10_000, ge=1)
    temp_dir: str | None = None
    max_attempts: int = Field(
        default=5, ge=1, le=100, description="failed attempts of one file content before it is quarantined"
    )


class LoggingSettings(_Strict):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class S3Settings(_Strict):
    """Options for ``s3://bucket/prefix`` zones. Credentials never live here: boto3's standard
    chain (env, profile, instance role) supplies them."""

    region: str | None = Field(default=None, description="AWS region; unset = boto3's default chain")
    endpoint_url: str | None = Field(
        default=None, description="S3/SQS endpoint (LocalStack, moto); unset = AWS_ENDPOINT_URL or AWS"
    )
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    queue_url: str | None = Field(
        default=None, description="SQS queue receiving the bucket's s3:ObjectCreated:* notifications"
    )
    poll_seconds: float = Field(default=20.0, ge=0, le=20, description="SQS long-poll wait per receive")
    visibility_seconds: int = Field(
        default=120, ge=10, le=43_200, description="SQS visibility; extended while a file is processed"
    )
    retry_seconds: int = Field(
        default=30, ge=0, le=43_200, description="redelivery delay of a message whose file was not finished"
    )
    sse_kms_key_id: str | None = Field(default=None, description="KMS key for objects dropzone writes")
    read_chunk_bytes: int = Field(
        default=8 * 2**20, ge=64 * 2**10, description="download chunk: the memory bound for reading objects"
    )
    multipart_threshold_bytes: int = Field(
        default=64 * 2**20, ge=5 * 2**20, description="uploads above this size use multipart"
    )
    part_bytes: int = Field(default=16 * 2**20, ge=5 * 2**20, le=5 * 2**30)
    copy_threshold_bytes: int = Field(
        default=5 * 2**30, ge=5 * 2**20, le=5 * 2**30, description="moves above this use multipart copy"
    )
    copy_part_bytes: int = Field(default=512 * 2**20, ge=5 * 2**20, le=5 * 2**30)


class ApiSettings(_Strict):
    """The push API (``dropzone api``; see README, "Push API")."""

    serve: bool = Field(default=False, description="`dropzone run` also serves the push API")
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = Field(
        default=None, description="external base URL, e.g. https://dz.example.org (token audience)"
    )
    token_ttl_seconds: int = Field(default=900, ge=30, le=86_400)
    signing_key: SecretStr | None = Field(
        default=None, description="HS256 key for access tokens, >= 32 bytes (env DROPZONE_API__SIGNING_KEY)"
    )
    signing_key_file: Path | None = Field(default=None, description="file holding the signing key")
    max_upload_bytes: int = Field(default=5 * 2**30, ge=1)
    max_resource_bytes: int = Field(default=16 * 2**20, ge=1024)
    body_read_timeout_seconds: float = Field(
        default=30.0, gt=0, description="no request-body chunk for this long: 408 and the connection closed"
    )
    body_min_bytes_per_second: float = Field(
        default=1024.0, ge=0, description="after body_read_timeout_seconds, slower bodies get 408 (0: off)"
    )
    token_failures_per_client: int = Field(
        default=10, ge=1, description="failed token requests per client id per window, then 429"
    )
    token_attempts_per_address: int = Field(
        default=30, ge=1, description="token requests per source address per window, then 429"
    )
    token_window_seconds: float = Field(default=60.0, gt=0, description="the token rate-limit window")


class SftpOptions(_Strict):
    """How to reach a remote SFTP drop zone (``zone: sftp://user@host:port/path``).

    Secrets come from the environment (``DROPZONE_SFTP__PASSWORD``,
    ``DROPZONE_SFTP__IDENTITY_PASSPHRASE``) or from files (``password_file``), never from the URL.
    """

    identity_file: Path | None = Field(default=None, description="private key file (OpenSSH or PEM format)")
    identity_passphrase: SecretStr | None = None
    identity_passphrase_file: Path | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    known_hosts: Path | None = Field(default=None, description="known_hosts file; default ~/.ssh/known_hosts")
    host_key_policy: Literal["strict", "accept-new"] = Field(
        default="strict", description="accept-new: trust and record a host seen for the first time"
    )
    connect_timeout: float = Field(default=15.0, gt=0)
    keepalive_seconds: int = Field(default=15, ge=0, description="0 disables SSH keepalives")
    reconnect_attempts: int = Field(default=6, ge=0, description="retries after a dropped connection")
    reconnect_max_delay: float = Field(default=30.0, gt=0, description="backoff cap between retries")


class SftpSettings(SftpOptions):
    # zone URL -> options that differ for that zone (several SFTP zones, one config)
    zones: dict[str, SftpOptions] = Field(default_factory=dict)

    def for_zone(self, url: str) -> SftpOptions:
        """These options with the ones set for ``url`` under ``zones:`` on top."""
        base = self.model_dump(exclude={"zones"}, exclude_unset=True)
        zone = self.zones.get(url)
        extra = zone.model_dump(exclude_unset=True) if zone is not None else {}
        return SftpOptions.model_validate(base | extra)


class TenantSettings(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    display_name: str | None = None
    policy: Policy | None = None
    mappings: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not TENANT_NAME.match(value):
            raise ValueError("tenant names are lower-case letters, digits, '.', '_' or '-' (max 63)")
        return value


class Settings(_Strict):
    zone: str = Field(default="./dropzone-data", description="folder path, s3://bucket/prefix or sftp://…")
    allow_undeclared_tenants: bool = Field(
        default=True, description="false: files for tenants without config/tenants/<t>.yaml are quarantined"
    )
    folder_polling: bool = Field(
        default=False,
        description="folder zones: poll instead of inotify (NFS/SMB); only the quiet period applies",
    )
    store: StoreSettings = Field(default_factory=StoreSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    sftp: SftpSettings = Field(default_factory=SftpSettings)
    tenants: dict[str, TenantSettings] = Field(default_factory=dict)
    config_dir: Path | None = None

    def tenant(self, name: str) -> TenantSettings | None:
        """The tenant's settings; undeclared tenants get defaults when they are allowed."""
        declared = self.tenants.get(name)
        if declared is not None:
            return declared
        if self.allow_undeclared_tenants and TENANT_NAME.match(name):
            return TenantSettings(name=name)
        return None

    def why_not_tenant(self, name: str | None) -> str:
        """Why ``name`` (a folder under incoming/) is not a tenant here, in words that say what to
        change: the usual causes are a capital letter and a tenant not declared."""
        if not name:
            return "files were dropped directly into incoming/; put them in incoming/<tenant>/"
        if not TENANT_NAME.match(name):
            lower = name.lower()
            if TENANT_NAME.match(lower) and self.tenant(lower) is not None:
                return f"tenant names are lower-case: use incoming/{lower}/ (not incoming/{name}/)"
            return "not a valid tenant name (lower-case letters, digits, '.', '_' or '-', at most 63)"
        return f"tenant '{name}' is not declared in config/tenants/ and allow_undeclared_tenants is false" + (
            f" (declared: {', '.join(sorted(self.tenants))})" if self.tenants else ""
        )

    def policy_for(self, tenant: str) -> Policy:
        declared = self.tenants.get(tenant)
        return (declared.policy if declared and declared.policy else None) or self.pipeline.policy

    def redacted(self) -> dict[str, Any]:
        """The effective settings for logs: secrets show as '**********'."""
        return self.model_dump(mode="json", exclude={"tenants"}) | {"tenants": sorted(self.tenants)}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if env.get("MONGODB_URI"):
        overrides.setdefault("store", {})["mongodb_uri"] = env["MONGODB_URI"]
    for name, raw in env.items():
        if not name.startswith("DROPZONE_") or name in ("DROPZONE_CONFIG",):
            continue
        path = name.removeprefix("DROPZONE_").lower().split("__")
        value: Any = yaml.safe_load(raw) if raw.strip() else None
        if path[-1] in ("mongodb_uri", "signing_key", "path") or path[0] == "zone":
            value = raw  # strings that YAML might reinterpret
        target = overrides
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return overrides


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_validation(source: str, err: ValidationError) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in err.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def resolve_config_dir(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """``--config DIR`` > ``DROPZONE_CONFIG`` > ``./config`` (only if it exists)."""
    chosen = explicit or env.get("DROPZONE_CONFIG")
    if chosen:
        path = Path(chosen)
        if not path.is_dir():
            raise ConfigError(f"config folder {path} does not exist")
        return path
    default = Path("config")
    return default if default.is_dir() else None


def load_settings(
    config_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Load and validate settings; raises ConfigError with every problem listed."""
    env = os.environ if env is None else env
    folder = resolve_config_dir(config_dir, env)
    data: dict[str, Any] = {}
    tenants: dict[str, Any] = {}
    if folder is not None:
        main_file = folder / "dropzone.yaml"
        if main_file.is_file():
            data = _read_yaml(main_file)
        tenant_dir = folder / "tenants"
        for tenant_file in sorted(tenant_dir.glob("*.yaml")) if tenant_dir.is_dir() else []:
            tenant_data = _read_yaml(tenant_file)
            tenant_data.setdefault("name", tenant_file.stem)
            if tenant_data["name"] != tenant_file.stem:
                raise ConfigError(f"{tenant_file}: name '{tenant_data['name']}' must match the file name")
            tenants[tenant_file.stem] = tenant_data
    data = _merge(data, _env_overrides(env))
    data = _merge(data, {k: v for k, v in overrides.items() if v is not None})
    data["tenants"] = _merge(data.get("tenants") or {}, tenants)
    for name, tenant_data in data["tenants"].items():
        if isinstance(tenant_data, dict):
            tenant_data.setdefault("name", name)
    data["config_dir"] = folder
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        source = str(folder / "dropzone.yaml") if folder else "defaults and environment"
        raise ConfigError(_format_validation(source, err)) from err
