"""boto3 plumbing for S3 zones: clients, zone URLs, error classification, ETag/version pins.

Only the ``s3*`` modules of ``dropzone.sources`` import boto3/botocore.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

from dropzone.errors import SourceUnavailable, UsageError

if TYPE_CHECKING:
    from dropzone.config import S3Settings

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
GONE = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchVersion"})
PRECONDITION = frozenset({"PreconditionFailed", "412"})
UNSUPPORTED = frozenset({"NotImplemented", "501"})


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` -> (bucket, ``"prefix/"`` or ``""``)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3":
        raise UsageError(f"not an s3:// URL: {parts.scheme}://")
    if parts.username or parts.password or "@" in parts.netloc:
        raise UsageError("s3:// URLs must not carry credentials (use the AWS environment or profile)")
    if parts.query or parts.fragment:
        raise UsageError("s3:// zone URLs take no query (set s3.* options in the config instead)")
    bucket = parts.netloc
    if not _BUCKET.match(bucket):
        raise UsageError(f"'{bucket}' is not a valid S3 bucket name")
    prefix = parts.path.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


# -- errors -----------------------------------------------------------------------------------------


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def http_status(err: ClientError) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_error(err: ClientError, codes: frozenset[str]) -> bool:
    return error_code(err) in codes or str(http_status(err)) in codes


def is_bad_version(err: ClientError) -> bool:
    """A version id the bucket does not know (deleted version) answers 400, not 404."""
    return error_code(err) in ("400", "InvalidArgument")


def unavailable(action: str, where: str, err: Exception) -> SourceUnavailable:
    """A boto error as a transient SourceUnavailable naming the operation and the error code only
    (botocore messages may quote request parameters)."""
    if isinstance(err, ClientError):
        code = error_code(err) or str(http_status(err))
        if code == "NoSuchBucket":
            return SourceUnavailable(f"{action} failed: the bucket of {where} does not exist")
        return SourceUnavailable(f"{action} failed on {where}: {code}")
    return SourceUnavailable(f"{action} failed on {where}: {type(err).__name__}")


# -- ETags and versions -----------------------------------------------------------------------------


def etag_of(raw: str | None) -> str | None:
    return raw.strip('"') if raw else None


def version_of(raw: str | None) -> str | None:
    """S3 reports ``"null"`` for objects written while versioning was off or suspended."""
    return raw if raw and raw != "null" else None


def quoted(etag: str) -> str:
    return f'"{etag}"'


def md5_verifiable(etag: str | None, response: dict[str, Any]) -> bool:
    """A plain-MD5 ETag: single-part upload without SSE-KMS/SSE-C (those ETags are opaque)."""
    return (
        etag is not None
        and re.fullmatch(r"[0-9a-f]{32}", etag) is not None
        and response.get("ServerSideEncryption") != "aws:kms"
        and not response.get("SSECustomerAlgorithm")
    )


@dataclass(frozen=True, slots=True)
class Pin:
    """The exact object a file refers to: its version when the bucket is versioned, else its ETag."""

    etag: str | None
    version_id: str | None

    def get_args(self) -> dict[str, str]:
        if self.version_id:
            return {"VersionId": self.version_id}
        return {"IfMatch": quoted(self.etag)} if self.etag else {}


# -- clients ----------------------------------------------------------------------------------------

_LOADER_LOCK = threading.Lock()
_LOADER: Any = None


def _shared_loader() -> Any:
    global _LOADER
    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = botocore.session.get_session().get_component("data_loader")
        return _LOADER


def make_client(service: str, options: S3Settings) -> Any:
    """An S3 or SQS client. Credentials and (unless configured) the endpoint come from boto3's
    own chain, including ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL_SQS``."""
    config = Config(
        region_name=options.region,
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=32,
        s3={"addressing_style": options.addressing_style},
    )
    # A new session per source keeps the credential chain fresh; only the parsed service models
    # are shared (loading them costs a few hundred milliseconds per client).
    core = botocore.session.get_session()
    core.register_component("data_loader", _shared_loader())
    try:
        session = boto3.session.Session(botocore_session=core, profile_name=options.profile)
        if options.region is None and session.region_name is None:
            config = config.merge(Config(region_name="us-east-1"))
        return session.client(service, endpoint_url=options.endpoint_url, config=config)
    except botocore.exceptions.ProfileNotFound as err:
        raise UsageError(f"AWS profile '{options.profile}' is not in the AWS config files") from err
