"""The S3 source's contract on moto in-process: listing, reads, moves, writes, URLs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from s3_support import BUCKET, keys, make_source, s3_settings

from dropzone.errors import SourceFileChanged, SourceFileGone, UsageError
from dropzone.models import IncomingFile
from dropzone.sources import open_source
from dropzone.sources.s3 import SOURCE_ETAG_META, S3Source, parse_s3_url

pytest_plugins = ["s3_fixtures"]

MiB = 2**20


def put(s3: Any, key: str, body: bytes = b"x") -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def only(source: S3Source) -> IncomingFile:
    (file,) = source.list_incoming()
    return file


# -- URLs and dispatch ---------------------------------------------------------------------------


def test_url_parsing_normalises_the_prefix_and_refuses_credentials() -> None:
    assert parse_s3_url("s3://bucket-1") == ("bucket-1", "")
    assert parse_s3_url("s3://bucket-1/") == ("bucket-1", "")
    assert parse_s3_url("s3://bucket-1/partners/zone/") == ("bucket-1", "partners/zone/")
    with pytest.raises(UsageError, match="credentials"):
        parse_s3_url("s3://AKIAXXX:secret@bucket-1/zone")
    with pytest.raises(UsageError, match="not a valid S3 bucket"):
        parse_s3_url("s3://Bad_Bucket/zone")
    with pytest.raises(UsageError, match="query"):
        parse_s3_url("s3://bucket-1/zone?region=x")


def test_open_source_dispatches_s3_urls(mock_s3: Any) -> None:
    settings = s3_settings(f"s3://{BUCKET}/p", s3={"queue_url": None})
    source = open_source(settings.zone, settings)
    assert isinstance(source, S3Source)
    assert source.url == f"s3://{BUCKET}/p"
    assert source.uploads_are_atomic
    source.start()  # the bucket is reachable
    source.close()


# -- listing ----------------------------------------------------------------------------------------


def test_listing_maps_keys_to_tenants_and_skips_what_is_not_an_upload(mock_s3: Any) -> None:
    source = make_source("zone")
    put(mock_s3, "zone/incoming/acme/2026/a.ndjson", b"abc")
    put(mock_s3, "zone/incoming/acme/b.ndjson.part")
    put(mock_s3, "zone/incoming/acme/.hidden/c.ndjson")
    put(mock_s3, "zone/incoming/acme/folder/", b"")  # a console "folder"
    put(mock_s3, "zone/incoming/loose.ndjson")
    put(mock_s3, "zone/archived/acme/2026/01/01/old.ndjson")
    put(mock_s3, "elsewhere/incoming/acme/x.ndjson")

    found = {f.key: f for f in source.list_incoming()}

    assert set(found) == {"incoming/acme/2026/a.ndjson", "incoming/loose.ndjson"}
    a = found["incoming/acme/2026/a.ndjson"]
    assert (a.tenant, a.relpath, a.size) == ("acme", "2026/a.ndjson", 3)
    assert a.etag == hashlib.md5(b"abc").hexdigest()
    assert found["incoming/loose.ndjson"].tenant == ""


def test_listing_follows_pages(mock_s3: Any) -> None:
    source = make_source()
    for i in range(5):
        put(mock_s3, f"incoming/acme/f{i}.ndjson")
    calls: list[str] = []

    def small_pages(params: dict[str, Any], **kwargs: Any) -> None:
        params["MaxKeys"] = 2  # S3 pages hold 1000 keys; 2 shows the same continuation logic
        calls.append("list")

    source._s3.meta.events.register("before-parameter-build.s3.ListObjectsV2", small_pages)
    assert sorted(f.name for f in source.list_incoming()) == [f"f{i}.ndjson" for i in range(5)]
    assert len(calls) == 3


def test_stat_and_exists(mock_s3: Any) -> None:
    source = make_source()
    put(mock_s3, "incoming/acme/a.ndjson", b"12345")
    item = source.stat("incoming/acme/a.ndjson")
    assert item is not None and item.size == 5 and item.etag == hashlib.md5(b"12345").hexdigest()
    assert source.stat("incoming/acme/missing.ndjson") is None
    assert source.exists("incoming/acme/a.ndjson")
    assert not source.exists("incoming/acme/missing.ndjson")


def test_versioned_bucket_listing_reports_version_ids(mock_s3: Any) -> None:
    mock_s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    source = make_source()
    put(mock_s3, "incoming/acme/a.ndjson", b"one")
    put(mock_s3, "incoming/acme/a.ndjson", b"two")  # the latest version is the one listed
    file = only(source)
    head = mock_s3.head_object(Bucket=BUCKET, Key="incoming/acme/a.ndjson")
    assert file.version_id == head["VersionId"]
    assert file.size == 3 and file.etag == hashlib.md5(b"two").hexdigest()


# -- reading ----------------------------------------------------------------------------------------


def test_local_copy_holds_the_bytes_and_is_removed_after(mock_s3: Any, tmp_path: Path) -> None:
    source = S3Source(BUCKET, "", s3_settings(f"s3://{BUCKET}").s3, temp_dir=str(tmp_path))
    put(mock_s3, "incoming/acme/a.ndjson", b'{"resourceType":"Patient"}\n')
    with source.local_copy(only(source)) as path:
        assert path.read_bytes() == b'{"resourceType":"Patient"}\n'
        assert path.parent == tmp_path
    assert not path.exists()


def test_zero_byte_object(mock_s3: Any) -> None:
    source = make_source()
    put(mock_s3, "incoming/acme/empty.ndjson", b"")
    file = only(source)
    assert file.size == 0
    with source.local_copy(file) as path:
        assert path.read_bytes() == b""


def test_large_multipart_object_is_read_in_chunks(mock_s3: Any, tmp_path: Path) -> None:
    """(The memory bound itself is measured over HTTP in test_s3_server.py: in-process moto
    builds whole responses in memory.)"""
    big = tmp_path / "big.bin"
    block = hashlib.sha256(b"seed").digest() * (MiB // 32)
    big.write_bytes(block * 12)  # 12 MiB
    source = make_source(read_chunk_bytes=256 * 1024, multipart_threshold_bytes=5 * MiB, part_bytes=5 * MiB)
    assert source.put("incoming/acme/big.bin", big) == "incoming/acme/big.bin"
    file = only(source)
    assert file.etag is not None and file.etag.endswith("-3")  # really multipart

    with source.local_copy(file) as path:
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()


def test_a_missing_object_is_gone(mock_s3: Any) -> None:
    source = make_source()
    put(mock_s3, "incoming/acme/a.ndjson")
    file = only(source)
    mock_s3.delete_object(Bucket=BUCKET, Key=file.key)
    with pytest.raises(SourceFileGone), source.local_copy(file):
        pass


def test_a_replaced_object_is_reported_as_changed(mock_s3: Any) -> None:
    source = make_source()
    put(mock_s3, "incoming/acme/a.ndjson", b"first")
    file = only(source)
    put(mock_s3, "incoming/acme/a.ndjson", b"second upload")
    with pytest.raises(SourceFileChanged), source.local_copy(file):
        pass


def test_read_bytes_and_its_limit(mock_s3: Any) -> None:
    source = make_source("z")
    put(mock_s3, "z/quarantine/acme/r.error.json", b'{"a": 1}')
    assert source.read_bytes("quarantine/acme/r.error.json") == b'{"a": 1}'
    assert source.read_bytes("quarantine/acme/r.error.json", limit=3) == b'{"a'
    with pytest.raises(SourceFileGone):
        source.read_bytes("quarantine/acme/none.json")


# -- moving -----------------------------------------------------------------------------------------


def test_move_copies_then_deletes_and_never_overwrites(mock_s3: Any) -> None:
    source = make_source("z")
    put(mock_s3, "z/archived/acme/2026/01/02/a.ndjson", b"earlier file")
    put(mock_s3, "z/incoming/acme/a.ndjson", b"new file")

    used = source.move(only(source), "archived/acme/2026/01/02/a.ndjson")

    assert used == "archived/acme/2026/01/02/a.2.ndjson"
    assert keys(mock_s3, "z/") == [
        "z/archived/acme/2026/01/02/a.2.ndjson",
        "z/archived/acme/2026/01/02/a.ndjson",
    ]
    body = mock_s3.get_object(Bucket=BUCKET, Key="z/archived/acme/2026/01/02/a.ndjson")["Body"].read()
    assert body == b"earlier file"


def test_move_of_a_missing_object_raises_gone(mock_s3: Any) -> None:
    source = make_source()
    put(mock_s3, "incoming/acme/a.ndjson")
    file = only(source)
    mock_s3.delete_object(Bucket=BUCKET, Key=file.key)
    with pytest.raises(SourceFileGone):
        source.move(file, "archived/acme/a.ndjson")


def test_move_keeps_content_type_and_metadata_and_marks_the_copy(mock_s3: Any) -> None:
    source = make_source()
    mock_s3.put_object(
        Bucket=BUCKET,
        Key="incoming/acme/a.json",
        Body=b"{}",
        ContentType="application/fhir+json",
        Metadata={"sender": "acme-sync"},
    )
    file = only(source)
    source.move(file, "archived/acme/a.json")
    head = mock_s3.head_object(Bucket=BUCKET, Key="archived/acme/a.json")
    assert head["ContentType"] == "application/fhir+json"
    assert head["Metadata"] == {"sender": "acme-sync", SOURCE_ETAG_META: file.etag}


def test_crash_between_copy_and_delete_is_finished_on_retry(
    mock_s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger sends the retry to the same destination: it must find its own copy there,
    delete the source, and not make a second copy."""
    source = make_source()
    put(mock_s3, "incoming/acme/a.ndjson", b"payload")
    file = only(source)

    class Crash(Exception):
        pass

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(source, "_delete", crash)
        with pytest.raises(Crash):
            source.move(file, "archived/acme/a.ndjson")
    assert keys(mock_s3) == ["archived/acme/a.ndjson", "incoming/acme/a.ndjson"]

    assert source.move(file, "archived/acme/a.ndjson") == "archived/acme/a.ndjson"
    assert keys(mock_s3) == ["archived/acme/a.ndjson"]


def test_object_replaced_while_processing_stays_and_the_processed_bytes_are_archived(mock_s3: Any) -> None:
    source = make_source()
    put(mock_s3, "incoming/acme/a.ndjson", b"version one")
    file = only(source)
    with source.local_copy(file):
        put(mock_s3, "incoming/acme/a.ndjson", b"version two, uploaded meanwhile")
        used = source.move(file, "archived/acme/a.ndjson")
    assert used == "archived/acme/a.ndjson"
    assert mock_s3.get_object(Bucket=BUCKET, Key=used)["Body"].read() == b"version one"
    remaining = only(source)
    assert remaining.etag == hashlib.md5(b"version two, uploaded meanwhile").hexdigest()


def test_object_deleted_while_processing_is_gone(mock_s3: Any) -> None:
    """Whoever removed it (the sender, or another worker that just archived it), our local
    bytes are not archived a second time."""
    source = make_source()
    put(mock_s3, "incoming/acme/a.ndjson", b"loaded bytes")
    file = only(source)
    with source.local_copy(file):
        mock_s3.delete_object(Bucket=BUCKET, Key=file.key)
        with pytest.raises(SourceFileGone):
            source.move(file, "archived/acme/a.ndjson")
    assert keys(mock_s3) == []


def test_versioned_move_removes_the_processed_and_superseded_versions_only(mock_s3: Any) -> None:
    mock_s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    source = make_source()
    put(mock_s3, "incoming/acme/a.ndjson", b"superseded before processing")
    put(mock_s3, "incoming/acme/a.ndjson", b"processed")
    file = only(source)
    with source.local_copy(file) as path:
        assert path.read_bytes() == b"processed"
        put(mock_s3, "incoming/acme/a.ndjson", b"uploaded during processing")
        source.move(file, "archived/acme/a.ndjson")

    assert mock_s3.get_object(Bucket=BUCKET, Key="archived/acme/a.ndjson")["Body"].read() == b"processed"
    versions = mock_s3.list_object_versions(Bucket=BUCKET, Prefix="incoming/")["Versions"]
    assert len(versions) == 1
    assert mock_s3.get_object(Bucket=BUCKET, Key="incoming/acme/a.ndjson")["Body"].read() == (
        b"uploaded during processing"
    )


def test_move_above_the_copy_threshold_uses_multipart_copy(mock_s3: Any, tmp_path: Path) -> None:
    data = bytes(range(256)) * (11 * MiB // 256)
    big = tmp_path / "big.bin"
    big.write_bytes(data)
    source = make_source(copy_threshold_bytes=5 * MiB, copy_part_bytes=5 * MiB)
    mock_s3.upload_file(str(big), BUCKET, "incoming/acme/big.bin")
    calls: list[str] = []
    source._s3.meta.events.register("before-call.s3.UploadPartCopy", lambda **kw: calls.append("part"))

    used = source.move(only(source), "archived/acme/big.bin")

    assert len(calls) == 3
    assert mock_s3.get_object(Bucket=BUCKET, Key=used)["Body"].read() == data
    assert keys(mock_s3) == ["archived/acme/big.bin"]


def test_move_key_moves_any_key(mock_s3: Any) -> None:
    source = make_source()
    put(mock_s3, "quarantine/acme/2026/01/01/a.ndjson", b"fixed")
    put(mock_s3, "incoming/acme/a.ndjson", b"someone else's")
    assert source.move_key("quarantine/acme/2026/01/01/a.ndjson", "incoming/acme/a.ndjson") == (
        "incoming/acme/a.2.ndjson"
    )
    with pytest.raises(SourceFileGone):
        source.move_key("quarantine/acme/none.ndjson", "incoming/acme/none.ndjson")


# -- writing ----------------------------------------------------------------------------------------


def test_put_bytes_never_overwrites_unless_asked(mock_s3: Any) -> None:
    source = make_source("z")
    assert source.put_bytes("quarantine/acme/r.error.json", b"1") == "quarantine/acme/r.error.json"
    assert source.put_bytes("quarantine/acme/r.error.json", b"2") == "quarantine/acme/r.2.error.json"
    assert (
        source.put_bytes("quarantine/acme/r.error.json", b"3", overwrite=True)
        == "quarantine/acme/r.error.json"
    )
    assert source.read_bytes("quarantine/acme/r.error.json") == b"3"
    assert source.read_bytes("quarantine/acme/r.2.error.json") == b"2"


def test_put_large_file_uses_multipart_without_overwriting(mock_s3: Any, tmp_path: Path) -> None:
    big = tmp_path / "rejects.ndjson"
    big.write_bytes(b"r" * (6 * MiB))
    source = make_source(multipart_threshold_bytes=5 * MiB, part_bytes=5 * MiB)
    assert source.put("quarantine/acme/x.rejects.ndjson", big) == "quarantine/acme/x.rejects.ndjson"
    assert source.put("quarantine/acme/x.rejects.ndjson", big) == "quarantine/acme/x.2.rejects.ndjson"
    head = mock_s3.head_object(Bucket=BUCKET, Key="quarantine/acme/x.rejects.ndjson")
    assert head["ETag"].endswith('-2"') and head["ContentLength"] == 6 * MiB
    assert not mock_s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")  # none left behind


def test_sse_kms_key_applies_to_what_dropzone_writes(mock_s3: Any) -> None:
    source = make_source(sse_kms_key_id="alias/dropzone")
    source.put_bytes("quarantine/acme/r.error.json", b"{}")
    head = mock_s3.head_object(Bucket=BUCKET, Key="quarantine/acme/r.error.json")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith("alias/dropzone")


def test_a_zone_on_a_missing_bucket_is_a_configuration_error(mock_s3: Any, tmp_path: Path) -> None:
    """Before: exit 1 and a bare 404; now exit 2 (ConfigError) naming the bucket."""
    from dropzone.config import load_settings
    from dropzone.errors import ConfigError
    from dropzone.service import open_store_and_source

    settings = load_settings(
        config_dir=None, env={"DROPZONE_STORE__KIND": "memory"}, zone="s3://no-such-bucket/partners"
    )
    with (
        pytest.raises(ConfigError, match="the bucket no-such-bucket does not exist"),
        open_store_and_source(settings),
    ):
        pass
