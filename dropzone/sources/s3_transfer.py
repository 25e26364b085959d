"""Moving bytes to and from S3 with bounded memory: streamed downloads that resume, multipart
uploads and multipart copies (CopyObject stops at 5 GB). Nothing appears under a multipart
key until the upload completes, and a failed upload is aborted so no parts are left billed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError

from dropzone.errors import SourceFileChanged, SourceFileGone, SourceUnavailable
from dropzone.log import event
from dropzone.sources.s3_client import (
    GONE,
    PRECONDITION,
    Pin,
    etag_of,
    is_bad_version,
    is_error,
    md5_verifiable,
    unavailable,
    version_of,
)

_log = logging.getLogger("dropzone.sources.s3")
READ_ATTEMPTS = 4


def download(
    client: Any, bucket: str, full_key: str, key: str, pin: Pin, out: IO[bytes], chunk_bytes: int, where: str
) -> Pin:
    """Stream the object to ``out`` in ``chunk_bytes`` pieces, resuming with a Range request if
    the connection drops. Every request after the first is pinned to the version/ETag the first
    one returned. Returns that pin; raises SourceFileChanged/SourceFileGone/SourceUnavailable."""
    written, expected, md5 = 0, None, None
    for attempt in range(1, READ_ATTEMPTS + 1):
        args: dict[str, Any] = dict(pin.get_args())
        if written:
            args["Range"] = f"bytes={written}-"
        try:
            response = client.get_object(Bucket=bucket, Key=full_key, **args)
        except ClientError as err:
            if is_error(err, PRECONDITION):
                event(_log, "s3.object_changed", logging.INFO, key=key)
                raise SourceFileChanged(key) from err
            if is_error(err, GONE) or (pin.version_id and is_bad_version(err)):
                raise SourceFileGone(key) from err
            raise unavailable("download", where, err) from err
        except BotoCoreError as err:
            if attempt == READ_ATTEMPTS:
                raise unavailable("download", where, err) from err
            continue
        if expected is None:
            pin = Pin(etag_of(response.get("ETag")), version_of(response.get("VersionId")) or pin.version_id)
            expected = int(response["ContentLength"])
            if md5_verifiable(pin.etag, response):
                md5 = hashlib.md5(usedforsecurity=False)
        body = response["Body"]
        try:
            for chunk in body.iter_chunks(chunk_bytes):
                out.write(chunk)
                if md5 is not None:
                    md5.update(chunk)
                written += len(chunk)
        except (BotoCoreError, OSError) as err:
            event(_log, "s3.download_interrupted", logging.WARNING, key=key, attempt=attempt)
            if attempt == READ_ATTEMPTS:
                raise unavailable("download", where, err) from err
            continue
        finally:
            body.close()
        if written >= expected:
            break
    if written != expected:
        raise SourceUnavailable(f"download of {key} ended early ({written} of {expected} bytes)")
    if md5 is not None and md5.hexdigest() != pin.etag:
        raise SourceUnavailable(f"download of {key} does not match its ETag (corrupted transfer)")
    return pin


def multipart_upload(
    client: Any,
    bucket: str,
    full_key: str,
    path: Path,
    part_bytes: int,
    create_args: dict[str, Any],
    complete_args: dict[str, Any],
) -> None:
    """Upload ``path`` in ``part_bytes`` parts (one part in memory at a time)."""
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=full_key, **create_args)["UploadId"]
    try:
        parts = []
        with path.open("rb") as fh:
            number = 1
            while chunk := fh.read(part_bytes):
                answer = client.upload_part(
                    Bucket=bucket, Key=full_key, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                number += 1
        client.complete_multipart_upload(
            Bucket=bucket, Key=full_key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **complete_args
        )
    except BaseException:
        _abort(client, bucket, full_key, upload_id)
        raise


def multipart_copy(
    client: Any,
    bucket: str,
    copy_source: dict[str, str],
    size: int,
    full_key: str,
    part_bytes: int,
    create_args: dict[str, Any],
    part_args: dict[str, Any],
    complete_args: dict[str, Any],
) -> None:
    """Copy ``size`` bytes of ``copy_source`` in ranges with UploadPartCopy (server side)."""
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=full_key, **create_args)["UploadId"]
    try:
        parts = []
        for number, start in enumerate(range(0, size, part_bytes), start=1):
            end = min(start + part_bytes, size) - 1
            answer = client.upload_part_copy(
                Bucket=bucket,
                Key=full_key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource=copy_source,
                CopySourceRange=f"bytes={start}-{end}",
                **part_args,
            )
            parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
        client.complete_multipart_upload(
            Bucket=bucket, Key=full_key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **complete_args
        )
    except BaseException:
        _abort(client, bucket, full_key, upload_id)
        raise


def _abort(client: Any, bucket: str, full_key: str, upload_id: str) -> None:
    with contextlib.suppress(ClientError, BotoCoreError):
        client.abort_multipart_upload(Bucket=bucket, Key=full_key, UploadId=upload_id)
