"""A drop zone in an S3 bucket (or any S3-compatible store: LocalStack, MinIO, moto's server).

``s3://bucket/prefix`` holds the same layout as a folder under ``prefix``. S3 makes an object
visible only once its upload completed (``uploads_are_atomic``), so a listed object is ready.

Discovery: paginated ListObjectsV2 always works; with ``s3.queue_url`` configured the bucket's
``s3:ObjectCreated:*`` notifications arrive through SQS (``s3_events.QueueConsumer``), which is
what lets many workers share one bucket without each re-listing it to find new work.

Consistency rules, because S3 has no rename:
* reads are pinned: the version id when known, else ``If-Match`` on the listed ETag; a replaced
  object raises ``SourceFileChanged`` and the new one is processed as a new file;
* a move is copy, then delete of exactly the copied version (``If-Match``/``VersionId``), so an
  upload that replaced the object meanwhile stays in incoming/;
* the copy carries the source ETag in its metadata: a worker that died between copy and delete
  is recognised on the retry (the ledger sends the same destination) and only the delete is redone;
* writes never overwrite: ``If-None-Match: *`` where the endpoint enforces it, plus a HEAD check
  where it does not (moto ignores it on CopyObject).

Credentials come only from boto3's standard chain; nothing here logs them or puts them in URLs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from dropzone.errors import ConfigError, SourceFileGone, SourceUnavailable
from dropzone.log import event
from dropzone.models import IncomingFile
from dropzone.sources.base import INCOMING, Source, is_temporary_name, with_suffix_number
from dropzone.sources.s3_client import (
    GONE,
    PRECONDITION,
    UNSUPPORTED,
    Pin,
    error_code,
    etag_of,
    http_status,
    is_bad_version,
    is_error,
    make_client,
    parse_s3_url,
    quoted,
    unavailable,
    version_of,
)
from dropzone.sources.s3_events import ObjectEvent, QueueConsumer
from dropzone.sources.s3_transfer import download, multipart_copy, multipart_upload

if TYPE_CHECKING:
    from dropzone.config import S3Settings, Settings

_log = logging.getLogger("dropzone.sources.s3")
_MAX_SUFFIX = 10_000
SOURCE_ETAG_META = "dropzone-source-etag"
# Content headers a copy keeps (MetadataDirective=REPLACE would otherwise drop them).
_CONTENT_HEADERS = ("ContentType", "ContentEncoding", "ContentDisposition", "ContentLanguage", "CacheControl")


class S3Source(Source):
    uploads_are_atomic = True

    def __init__(
        self,
        bucket: str,
        prefix: str,
        options: S3Settings,
        *,
        temp_dir: str | None = None,
        s3_client: Any = None,
        sqs_client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.options = options
        self._temp_dir = temp_dir
        self._s3 = s3_client if s3_client is not None else make_client("s3", options)
        self._conditional_writes = True
        self._versioning: bool | None = None
        self._lock = threading.Lock()
        # zone key -> (pin, local path) of downloads in progress: move() needs the version that
        # was read, and archives the local bytes if a sender replaced the object meanwhile.
        self._local: dict[str, tuple[Pin, Path]] = {}
        self._queue: QueueConsumer | None = None
        if options.queue_url:
            sqs = sqs_client if sqs_client is not None else make_client("sqs", options)
            self._queue = QueueConsumer(
                sqs,
                options.queue_url,
                self._accept_event,
                wait_seconds=options.poll_seconds,
                visibility_seconds=options.visibility_seconds,
                retry_seconds=options.retry_seconds,
            )

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _full(self, key: str) -> str:
        return self.prefix + key

    def _zone_key(self, full_key: str) -> str | None:
        return full_key[len(self.prefix) :] if full_key.startswith(self.prefix) else None

    # -- listing --------------------------------------------------------------------------------

    def list_incoming(self) -> list[IncomingFile]:
        prefix = self._full(f"{INCOMING}/")
        found: list[IncomingFile] = []
        try:
            if self._versioned():
                # Versioned bucket: list versions to learn each object's version id (recorded in
                # the ledger and used to pin reads) without a HEAD per object.
                pages = self._s3.get_paginator("list_object_versions").paginate(
                    Bucket=self.bucket, Prefix=prefix
                )
                for page in pages:
                    for obj in page.get("Versions", []):
                        if obj.get("IsLatest"):
                            item = self._incoming(
                                obj["Key"],
                                obj["Size"],
                                obj["LastModified"],
                                obj.get("ETag"),
                                obj.get("VersionId"),
                            )
                            if item is not None:
                                found.append(item)
                return found
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    item = self._incoming(obj["Key"], obj["Size"], obj["LastModified"], obj.get("ETag"))
                    if item is not None:
                        found.append(item)
        except (ClientError, BotoCoreError) as err:
            raise self._unavailable("list", err) from err
        return found

    def _versioned(self) -> bool:
        """Whether the bucket has (or had) versioning, asked once. Without permission to ask,
        assume not: reads are then pinned by ETag, which is just as safe."""
        if self._versioning is None:
            try:
                status = self._s3.get_bucket_versioning(Bucket=self.bucket).get("Status")
            except ClientError as err:
                if http_status(err) != 403:
                    raise
                status = None
            self._versioning = status in ("Enabled", "Suspended")
        return self._versioning

    def _incoming(
        self, full_key: str, size: int, modified: Any, etag: str | None, version_id: str | None = None
    ) -> IncomingFile | None:
        key = self._zone_key(full_key)
        if key is None or not key.startswith(f"{INCOMING}/") or key.endswith("/"):
            return None  # "folder" marker objects some tools create
        rel = key[len(INCOMING) + 1 :]
        if not rel or is_temporary_name(rel):
            return None
        tenant, _, relpath = rel.partition("/")
        if not relpath:
            tenant, relpath = "", rel
        return IncomingFile(
            tenant=tenant,
            relpath=relpath,
            size=int(size),
            mtime=modified.timestamp(),
            etag=etag_of(etag),
            version_id=version_of(version_id),
        )

    def stat(self, key: str) -> IncomingFile | None:
        head = self._head(self._full(key))
        if head is None:
            return None
        return self._incoming(
            self._full(key),
            head["ContentLength"],
            head["LastModified"],
            head.get("ETag"),
            head.get("VersionId"),
        )

    def _head(self, full_key: str, version_id: str | None = None) -> dict[str, Any] | None:
        args = {"VersionId": version_id} if version_id else {}
        try:
            return self._s3.head_object(Bucket=self.bucket, Key=full_key, **args)
        except ClientError as err:
            if is_error(err, GONE) or (version_id and is_bad_version(err)):
                return None
            raise self._unavailable("head", err) from err
        except BotoCoreError as err:
            raise self._unavailable("head", err) from err

    # -- reading --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def local_copy(self, file: IncomingFile) -> Iterator[Path]:
        fd, name = tempfile.mkstemp(prefix="dropzone-s3-", dir=self._temp_dir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                pin = download(
                    self._s3,
                    self.bucket,
                    self._full(file.key),
                    file.key,
                    Pin(file.etag, file.version_id),
                    out,
                    self.options.read_chunk_bytes,
                    self.url,
                )
            with self._lock:
                self._local[file.key] = (pin, path)
            yield path
        finally:
            with self._lock:
                if self._local.get(file.key, (None, None))[1] == path:
                    del self._local[file.key]
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def read_bytes(self, key: str, limit: int = 64 * 2**20) -> bytes:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=self._full(key))
            body = response["Body"]
            try:
                return body.read(limit)
            finally:
                body.close()
        except ClientError as err:
            if is_error(err, GONE):
                raise SourceFileGone(key) from err
            raise self._unavailable("read", err) from err
        except BotoCoreError as err:
            raise self._unavailable("read", err) from err

    def exists(self, key: str) -> bool:
        return self._head(self._full(key)) is not None

    # -- moving ---------------------------------------------------------------------------------

    def move(self, file: IncomingFile, dest_key: str) -> str:
        with self._lock:
            local = self._local.get(file.key)
        pin = local[0] if local else Pin(file.etag, file.version_id)
        return self._move(file.key, pin, local[1] if local else None, dest_key)

    def move_key(self, src_key: str, dest_key: str) -> str:
        return self._move(src_key, Pin(None, None), None, dest_key)

    def _move(self, src_key: str, pin: Pin, local: Path | None, dest_key: str) -> str:
        """Copy the pinned object to the first free name, then delete exactly that object.

        * Its own earlier copy at a candidate name (a worker died between copy and delete; the
          ledger retries with the same destination) counts as done: only the delete is redone.
        * The key now holds a different upload (a sender replaced it while we processed): the
          bytes we processed are archived from the local copy, the new upload stays in incoming/.
        * Nothing under the key: SourceFileGone. Another worker may have moved it a moment ago,
          so archiving our local bytes here would make a second, false copy.
        """
        src_full = self._full(src_key)
        head = self._head(src_full, pin.version_id)
        if head is not None and pin.etag and etag_of(head.get("ETag")) != pin.etag:
            head = None
        if head is not None and pin.etag is None:
            pin = Pin(etag_of(head.get("ETag")), version_of(head.get("VersionId")))
        for n in range(1, _MAX_SUFFIX):
            key = dest_key if n == 1 else with_suffix_number(dest_key, n)
            existing = self._head(self._full(key))
            if existing is not None:
                if pin.etag and existing.get("Metadata", {}).get(SOURCE_ETAG_META) == pin.etag:
                    break  # our own earlier copy
                continue
            if head is not None:
                if self._copy(src_full, pin, head, key):
                    break
                if self._still_there(src_full, pin):
                    continue  # 412 on the destination: someone else took the name
                head = None
            if local is None or pin.etag is None or self._head(src_full) is None:
                raise SourceFileGone(src_key)
            event(_log, "s3.object_changed", logging.INFO, key=src_key)
            if self._upload_file(local, key, {SOURCE_ETAG_META: pin.etag}):
                break
        else:
            raise SourceUnavailable(f"no free name for {dest_key}")
        if head is not None or self._still_there(src_full, pin):
            self._delete(src_full, pin, src_key)
        return key

    def _still_there(self, full_key: str, pin: Pin) -> bool:
        head = self._head(full_key, pin.version_id)
        return head is not None and (not pin.etag or etag_of(head.get("ETag")) == pin.etag)

    def _copy(self, src_full: str, pin: Pin, head: dict[str, Any], key: str) -> bool:
        """Copy the pinned source to ``key`` unless it exists; False on a precondition failure."""
        copy_source = {"Bucket": self.bucket, "Key": src_full}
        if pin.version_id:
            copy_source["VersionId"] = pin.version_id
        metadata = dict(head.get("Metadata") or {})
        if pin.etag:
            metadata[SOURCE_ETAG_META] = pin.etag
        args: dict[str, Any] = {k: head[k] for k in _CONTENT_HEADERS if head.get(k)}
        args.update(self._encryption(), Metadata=metadata)
        if pin.etag:
            args["CopySourceIfMatch"] = quoted(pin.etag)  # enforced by S3, not by moto (HEAD above)
        try:
            size = int(head["ContentLength"])
            if size > self.options.copy_threshold_bytes:
                part_args = {"CopySourceIfMatch": args.pop("CopySourceIfMatch")} if pin.etag else {}
                multipart_copy(
                    self._s3,
                    self.bucket,
                    copy_source,
                    size,
                    self._full(key),
                    self.options.copy_part_bytes,
                    args,
                    part_args,
                    self._if_none_match(),
                )
            else:
                self._s3.copy_object(
                    CopySource=copy_source,
                    Bucket=self.bucket,
                    Key=self._full(key),
                    MetadataDirective="REPLACE",
                    **args,
                    **self._if_none_match(),
                )
            return True
        except ClientError as err:
            if is_error(err, PRECONDITION):
                return False
            if is_error(err, GONE):
                return False
            raise self._unavailable("copy", err) from err
        except BotoCoreError as err:
            raise self._unavailable("copy", err) from err

    def _delete(self, full_key: str, pin: Pin, key: str) -> None:
        """Delete exactly the copied object. With a version id that version goes (a newer
        upload stays current); without one, If-Match keeps a replacing upload alive."""
        args: dict[str, str] = {}
        superseded: list[str] = []
        if pin.version_id:
            args["VersionId"] = pin.version_id
            superseded = self._superseded(full_key, pin.version_id)
        elif pin.etag and self._conditional_writes:
            args["IfMatch"] = quoted(pin.etag)
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=full_key, **args)
        except ClientError as err:
            if is_error(err, PRECONDITION):
                event(_log, "s3.object_changed", logging.INFO, key=key)
                return
            if is_error(err, GONE):
                return
            if is_error(err, UNSUPPORTED) and "IfMatch" in args:
                self._conditional_writes = False
                if self._still_there(full_key, pin):
                    self._delete(full_key, pin, key)
                return
            raise self._unavailable("delete", err) from err
        except BotoCoreError as err:
            raise self._unavailable("delete", err) from err
        if superseded:
            self._delete_versions(full_key, superseded)

    def _superseded(self, full_key: str, version_id: str) -> list[str]:
        """Versioned bucket: deleting the processed version would make an older upload of the
        same name current again (and processed after its replacement). These are the versions
        it superseded, to remove as a folder overwrite would have; newer uploads stay."""
        older: list[str] = []
        found = False
        try:
            pages = self._s3.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=full_key
            )
            for page in pages:
                for obj in page.get("Versions", []):  # one key's versions come newest first
                    if obj["Key"] != full_key:
                        continue
                    if found:
                        older.append(obj["VersionId"])
                    found = found or obj["VersionId"] == version_id
        except (ClientError, BotoCoreError) as err:
            event(_log, "s3.superseded_cleanup_failed", logging.WARNING, error_type=type(err).__name__)
        return older

    def _delete_versions(self, full_key: str, versions: list[str]) -> None:
        try:
            for start in range(0, len(versions), 1000):
                batch = [{"Key": full_key, "VersionId": v} for v in versions[start : start + 1000]]
                self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        except (ClientError, BotoCoreError) as err:
            event(_log, "s3.superseded_cleanup_failed", logging.WARNING, error_type=type(err).__name__)

    # -- writing --------------------------------------------------------------------------------

    def put(self, key: str, local_path: Path, *, overwrite: bool = False) -> str:
        return self._put_unique(key, overwrite, lambda k, ow: self._upload_file(local_path, k, {}, ow))

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> str:
        return self._put_unique(key, overwrite, lambda k, ow: self._put_object(k, data, {}, ow))

    def _put_unique(self, key: str, overwrite: bool, write: Callable[[str, bool], bool]) -> str:
        if overwrite:
            write(key, True)
            return key
        for n in range(1, _MAX_SUFFIX):
            candidate = key if n == 1 else with_suffix_number(key, n)
            if not self._conditional_writes and self.exists(candidate):
                continue
            if write(candidate, False):
                return candidate
        raise SourceUnavailable(f"no free name for {key}")

    def _upload_file(self, path: Path, key: str, metadata: dict[str, str], overwrite: bool = False) -> bool:
        size = path.stat().st_size
        if size <= self.options.multipart_threshold_bytes:
            with path.open("rb") as fh:
                return self._put_object(key, fh, metadata, overwrite)
        return self._multipart_upload(path, key, metadata, overwrite)

    def _put_object(
        self, key: str, body: bytes | IO[bytes], metadata: dict[str, str], overwrite: bool
    ) -> bool:
        """One PUT; False when ``key`` already exists (and ``overwrite`` is off)."""
        args: dict[str, Any] = {"Metadata": metadata, **self._encryption()}
        if not overwrite:
            args.update(self._if_none_match())
        try:
            self._s3.put_object(Bucket=self.bucket, Key=self._full(key), Body=body, **args)
            return True
        except ClientError as err:
            if is_error(err, PRECONDITION):
                return False
            if is_error(err, UNSUPPORTED) and "IfNoneMatch" in args:
                self._conditional_writes = False  # fall back to HEAD-then-PUT for this endpoint
                if self.exists(key):
                    return False
                if not isinstance(body, bytes):
                    body.seek(0)
                return self._put_object(key, body, metadata, True)
            raise self._unavailable("upload", err) from err
        except BotoCoreError as err:
            raise self._unavailable("upload", err) from err

    def _multipart_upload(self, path: Path, key: str, metadata: dict[str, str], overwrite: bool) -> bool:
        try:
            multipart_upload(
                self._s3,
                self.bucket,
                self._full(key),
                path,
                self.options.part_bytes,
                {"Metadata": metadata, **self._encryption()},
                {} if overwrite else self._if_none_match(),
            )
            return True
        except ClientError as err:
            if is_error(err, PRECONDITION):
                return False
            raise self._unavailable("upload", err) from err
        except BotoCoreError as err:
            raise self._unavailable("upload", err) from err

    def _if_none_match(self) -> dict[str, str]:
        return {"IfNoneMatch": "*"} if self._conditional_writes else {}

    def _encryption(self) -> dict[str, str]:
        if self.options.sse_kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.options.sse_kms_key_id}
        return {}

    # -- notifications --------------------------------------------------------------------------

    def _accept_event(self, item: ObjectEvent) -> str | None:
        if item.bucket != self.bucket:
            return None
        key = self._zone_key(item.key)
        if key is None or not key.startswith(f"{INCOMING}/") or key.endswith("/"):
            return None
        return None if is_temporary_name(key[len(INCOMING) + 1 :]) else key

    def check(self) -> None:
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except ClientError as err:
            status = str(http_status(err))
            if status == "404" or error_code(err) == "NoSuchBucket":
                raise ConfigError(
                    f"the bucket {self.bucket} does not exist (check the zone URL {self.url} and the region)"
                ) from None
            if status == "403":
                raise ConfigError(
                    f"access to the bucket {self.bucket} is denied: check the AWS credentials and the "
                    "bucket policy"
                ) from None
            raise self._unavailable("open bucket", err) from err
        except BotoCoreError as err:
            raise self._unavailable("open bucket", err) from err

    def start(self) -> None:
        self.check()

    def wait_for_activity(self, timeout: float, stop: threading.Event) -> set[str]:
        if self._queue is None:
            return super().wait_for_activity(timeout, stop)
        return set(self._queue.receive(timeout, stop))

    def acknowledge(self, key: str, *, processed: bool = True) -> None:
        if self._queue is not None:
            self._queue.acknowledge(key, processed)

    def close(self) -> None:
        if self._queue is not None:
            self._queue.close()

    def _unavailable(self, action: str, err: Exception) -> SourceUnavailable:
        return unavailable(action, self.url, err)


def open_s3_source(url: str, settings: Settings) -> S3Source:
    bucket, prefix = parse_s3_url(url)
    return S3Source(bucket, prefix, settings.s3, temp_dir=settings.pipeline.temp_dir)
