"""Settings: ``config/dropzone.yaml`` + ``config/tenants/*.yaml``, then environment variables.

Precedence (lowest first): built-in defaults, the YAML files, environment variables, explicit
command-line options. Environment variables are read by pydantic-settings: ``DROPZONE_<FIELD>``
for top-level fields and ``DROPZONE_<SECTION>__<FIELD>`` inside a section
(``DROPZONE_PIPELINE__LEASE_SECONDS=30``), plus the standard ``MONGODB_URI``. An unknown
``DROPZONE_*`` variable is a warning, not a failed start (other tools share the prefix space).
Every error names its source: the YAML file and key, the variable, or the command line.
Secrets are held as ``SecretStr`` so they never print.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic._internal._utils import deep_update
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from dropzone.errors import ConfigError

ENV_PREFIX = "DROPZONE_"
# Variables with the prefix that are not settings: the config folder itself.
_NOT_SETTINGS = frozenset({"DROPZONE_CONFIG"})
_log = logging.getLogger("dropzone.config")

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
    commit_seconds: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="a file's batches are committed together up to this age of the transaction "
        "(SQLite: fewer page writes; other writers wait at most about this long); 0 = every batch",
    )
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
    profile: str | None = Field(
        default=None, description="AWS profile (~/.aws/config); unset = AWS_PROFILE or the default chain"
    )
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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid",
        validate_assignment=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_ignore_empty=True,  # an empty variable is unset, not an empty number
    )

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # ``Settings()`` alone: arguments over DROPZONE_* over defaults; ``load_settings`` adds YAML.
        return (init_settings, env_settings)

    def why_not_tenant(self, name: str | None, flag: bool = False) -> str:
        """Why ``name`` (a folder under incoming/, or ``--tenant`` when ``flag``) is not a tenant
        here, in words that say what to change: the usual causes are a capital letter, a typo
        and a tenant not declared."""
        if not name:
            return "files were dropped directly into incoming/; put them in incoming/<tenant>/"
        if not TENANT_NAME.match(name):
            lower = name.lower()
            if TENANT_NAME.match(lower) and self.tenant(lower) is not None:
                if flag:
                    return f"tenant names are lower-case: use --tenant {lower} (not {name})"
                return f"tenant names are lower-case: use incoming/{lower}/ (not incoming/{name}/)"
            return "not a valid tenant name (lower-case letters, digits, '.', '_' or '-', at most 63)"
        close = difflib.get_close_matches(name, sorted(self.tenants), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"tenant '{name}' is not declared in config/tenants/ and allow_undeclared_tenants is false"
            + (f" (declared: {', '.join(sorted(self.tenants))})" if self.tenants else "")
            + hint
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


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (tests and callers pass one;
    the default is ``os.environ``)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._given = env
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._given.items() if not (self.env_ignore_empty and v == "")}


def _field_path(model: type[BaseModel], parts: list[str]) -> bool:
    """Whether ``parts`` (lower-case) names a setting: a field, a field inside a section, or any
    key inside a mapping (tenants, sftp.zones) whose values are checked by validation."""
    fields = model.model_fields
    head, rest = parts[0], parts[1:]
    if head not in fields:
        return False
    if not rest:
        return True
    annotation = fields[head].annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _field_path(annotation, rest)
    return getattr(annotation, "__origin__", None) is dict


def _split_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[tuple[str, ...], str]]:
    """The DROPZONE_* variables that are settings, and where each setting came from; unknown
    ones are logged and ignored (a typo must not stop a running service's restart)."""
    known: dict[str, str] = {}
    origin: dict[tuple[str, ...], str] = {}
    for name, value in env.items():
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in _NOT_SETTINGS:
            continue
        parts = upper.removeprefix(ENV_PREFIX).lower().split("__")
        if not all(parts) or not _field_path(Settings, parts):
            _log.warning(
                "config.unknown_variable", extra={"dz_fields": {"variable": name, "hint": _env_hint(parts)}}
            )
            continue
        known[name] = value
        origin[tuple(parts)] = name
    return known, origin


def _env_hint(parts: list[str]) -> str:
    names = ["__".join(p).upper() for p in _all_paths(Settings)]
    close = difflib.get_close_matches("__".join(parts).upper(), names, n=1)
    return f"{ENV_PREFIX}{close[0]}" if close else ""


def _all_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(_all_paths(annotation, (*prefix, name)))
        else:
            out.append((*prefix, name))
    return out


def _read_env(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    known, origin = _split_env(env)
    try:
        data = _EnvSource(known)()
    except SettingsError as err:
        raise ConfigError(f"invalid configuration (environment): {err}") from None
    if env.get("MONGODB_URI") and ("store", "mongodb_uri") not in origin:
        data = deep_update(data, {"store": {"mongodb_uri": env["MONGODB_URI"]}})
        origin[("store", "mongodb_uri")] = "MONGODB_URI"
    return data, origin


def _has(data: Mapping[str, Any], loc: tuple[str, ...]) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


class _Sources:
    """Which source supplied each value, to say where an invalid one came from."""

    def __init__(
        self,
        main_file: Path | None,
        yaml_data: dict[str, Any],
        tenant_files: dict[str, Path],
        env_origin: dict[tuple[str, ...], str],
        overrides: dict[str, Any],
    ) -> None:
        self.main_file = main_file
        self.yaml_data = yaml_data
        self.tenant_files = tenant_files
        self.env_origin = env_origin
        self.overrides = overrides

    def where(self, loc: tuple[str, ...]) -> str:
        dotted = ".".join(loc) or "(top level)"
        if _has(self.overrides, loc[:1]) and loc[:1] != ("tenants",):
            return "command line"
        for depth in range(len(loc), 0, -1):
            name = self.env_origin.get(tuple(p.lower() for p in loc[:depth]))
            if name:
                return f"environment variable {name}"
        if len(loc) >= 2 and loc[0] == "tenants" and loc[1] in self.tenant_files:
            inner = ".".join(loc[2:]) or "(top level)"
            return f"{self.tenant_files[loc[1]]}, key {inner}"
        if self.main_file is not None and _has(self.yaml_data, loc[:1]):
            return f"{self.main_file}, key {dotted}"
        return "defaults"

    def describe(self, err: ValidationError) -> str:
        lines = ["invalid configuration:"]
        for item in err.errors(include_input=False, include_url=False):
            loc = tuple(str(p) for p in item["loc"])
            where = ".".join(loc) or "(top level)"
            lines.append(f"  {where}: {item['msg']} ({self.where(loc)})")
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
    """Load and validate settings; raises ConfigError with every problem and its source."""
    env = os.environ if env is None else env
    folder = resolve_config_dir(config_dir, env)
    yaml_data: dict[str, Any] = {}
    tenants: dict[str, Any] = {}
    tenant_files: dict[str, Path] = {}
    main_file = folder / "dropzone.yaml" if folder is not None else None
    if folder is not None:
        if main_file is not None and main_file.is_file():
            yaml_data = _read_yaml(main_file)
        tenant_dir = folder / "tenants"
        for tenant_file in sorted(tenant_dir.glob("*.yaml")) if tenant_dir.is_dir() else []:
            tenant_data = _read_yaml(tenant_file)
            tenant_data.setdefault("name", tenant_file.stem)
            if tenant_data["name"] != tenant_file.stem:
                raise ConfigError(f"{tenant_file}: name '{tenant_data['name']}' must match the file name")
            tenants[tenant_file.stem] = tenant_data
            tenant_files[tenant_file.stem] = tenant_file
    env_data, env_origin = _read_env(env)
    given = {k: v for k, v in overrides.items() if v is not None}
    # Lowest first, merged by pydantic's deep_update as pydantic-settings merges its sources.
    data = deep_update(yaml_data, env_data, given)
    data["tenants"] = deep_update(data.get("tenants") or {}, tenants)
    for name, tenant_data in data["tenants"].items():
        if isinstance(tenant_data, dict):
            tenant_data.setdefault("name", name)
    data["config_dir"] = folder
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        sources = _Sources(main_file if yaml_data else None, yaml_data, tenant_files, env_origin, given)
        raise ConfigError(sources.describe(err)) from None
