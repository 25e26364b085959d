"""The whole pipeline on an S3 zone (moto in-process): same layout, outcomes and ledger as a folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_support import BUCKET, FIXTURES, keys, patients, read_json, s3_settings

from dropzone.models import Outcome
from dropzone.pipeline.runner import Pipeline
from dropzone.sources.s3 import S3Source
from dropzone.store.memory import MemoryStore
from dropzone.watcher import Watcher

pytest_plugins = ["s3_fixtures"]

MiB = 2**20
ZONE = f"s3://{BUCKET}/partners"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def pipeline(mock_s3: Any, store: MemoryStore, tmp_path: Path) -> Iterator[Pipeline]:
    settings = s3_settings(ZONE, tmp_path, s3={"read_chunk_bytes": 64 * 1024})
    source = S3Source(BUCKET, "partners/", settings.s3, temp_dir=str(tmp_path))
    with Pipeline(settings, store, source, worker_id="test-worker") as pipe:
        yield pipe
    source.close()


def drain(pipeline: Pipeline) -> list[Any]:
    return Watcher(pipeline, pipeline.source, pipeline.settings).drain_once()


def upload(s3: Any, key: str, body: bytes) -> None:
    s3.put_object(Bucket=BUCKET, Key=f"partners/{key}", Body=body)


def test_loaded_file_is_archived_and_bad_file_quarantined_with_its_report(
    mock_s3: Any, pipeline: Pipeline, store: MemoryStore
) -> None:
    upload(mock_s3, "incoming/acme/batch-1/patients.ndjson", (FIXTURES / "patients.ndjson").read_bytes())
    upload(mock_s3, "incoming/acme/all-invalid.ndjson", (FIXTURES / "all-invalid.ndjson").read_bytes())

    results = {r.name: r for r in drain(pipeline)}

    assert results["patients.ndjson"].outcome is Outcome.ARCHIVED
    assert results["patients.ndjson"].counts.loaded == 3
    assert results["all-invalid.ndjson"].outcome is Outcome.QUARANTINED
    assert store.resources.counts(["acme"]) == {"Patient": 3}
    names = keys(mock_s3, "partners/")
    assert not [k for k in names if k.startswith("partners/incoming/")]
    archived = [k for k in names if k.startswith("partners/archived/acme/")]
    assert len(archived) == 1 and archived[0].endswith("/patients.ndjson")
    report_key = f"partners/{results['all-invalid.ndjson'].report}"
    assert report_key in names and report_key.startswith("partners/quarantine/acme/")
    assert report_key.replace(".error.json", "") in names  # the file sits next to its report
    report = read_json(mock_s3, report_key)
    assert report["outcome"] == "quarantined"
    assert report["counts"]["rejected"] == 2
    assert "not-a-date" not in str(report)  # no field values (PHI) in reports


def test_reupload_of_identical_bytes_is_a_duplicate(
    mock_s3: Any, pipeline: Pipeline, store: MemoryStore
) -> None:
    body = (FIXTURES / "organizations.ndjson").read_bytes()
    upload(mock_s3, "incoming/acme/orgs.ndjson", body)
    assert [r.outcome for r in drain(pipeline)] == [Outcome.ARCHIVED]
    upload(mock_s3, "incoming/acme/orgs-again.ndjson", body)

    (again,) = drain(pipeline)

    assert again.outcome is Outcome.DUPLICATE
    assert store.resources.counts(["acme"]) == {"Organization": 5}
    assert len([k for k in keys(mock_s3, "partners/archived/acme/")]) == 2


def test_zero_byte_object_is_quarantined_with_a_reason(mock_s3: Any, pipeline: Pipeline) -> None:
    upload(mock_s3, "incoming/acme/empty.ndjson", b"")
    (result,) = drain(pipeline)
    assert result.outcome is Outcome.QUARANTINED
    assert read_json(mock_s3, f"partners/{result.report}")["outcome"] == "quarantined"
    assert result.reason


def test_object_larger_than_the_read_chunk_is_loaded(
    mock_s3: Any, pipeline: Pipeline, store: MemoryStore
) -> None:
    body = patients(1800)  # ~5.6 MB against a 64 KiB read chunk, uploaded in two parts
    assert len(body) > 5 * MiB
    parts = [body[: 5 * MiB], body[5 * MiB :]]
    upload_id = mock_s3.create_multipart_upload(Bucket=BUCKET, Key="partners/incoming/acme/big.ndjson")[
        "UploadId"
    ]
    done = []
    for number, part in enumerate(parts, start=1):
        answer = mock_s3.upload_part(
            Bucket=BUCKET,
            Key="partners/incoming/acme/big.ndjson",
            UploadId=upload_id,
            PartNumber=number,
            Body=part,
        )
        done.append({"PartNumber": number, "ETag": answer["ETag"]})
    mock_s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key="partners/incoming/acme/big.ndjson",
        UploadId=upload_id,
        MultipartUpload={"Parts": done},
    )

    (result,) = drain(pipeline)

    assert result.outcome is Outcome.ARCHIVED and result.counts.loaded == 1800
    assert store.resources.counts(["acme"]) == {"Patient": 1800}


def test_ledger_records_size_etag_and_version(mock_s3: Any, pipeline: Pipeline, store: MemoryStore) -> None:
    mock_s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    body = (FIXTURES / "organizations.ndjson").read_bytes()
    upload(mock_s3, "incoming/acme/orgs.ndjson", body)
    head = mock_s3.head_object(Bucket=BUCKET, Key="partners/incoming/acme/orgs.ndjson")

    (result,) = drain(pipeline)

    (record,) = store.ledger.files("acme")
    assert record["size"] == len(body)
    assert record["etag"] == head["ETag"].strip('"')
    assert record["version_id"] == head["VersionId"]
    assert record["state"] == result.outcome.value == "archived"


def test_crash_after_the_outcome_between_copy_and_delete_loads_nothing_twice(
    mock_s3: Any, pipeline: Pipeline, store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(mock_s3, "incoming/acme/patients.ndjson", (FIXTURES / "patients.ndjson").read_bytes())
    source = pipeline.source
    assert isinstance(source, S3Source)

    class Killed(BaseException):
        """Stands for the process dying: nothing below the pipeline catches it."""

    def die(*args: Any, **kwargs: Any) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(source, "_delete", die)
        with pytest.raises(Killed):
            drain(pipeline)
    names = keys(mock_s3, "partners/")
    assert "partners/incoming/acme/patients.ndjson" in names  # copied, not yet deleted
    assert len([k for k in names if k.startswith("partners/archived/")]) == 1

    # While the dead owner's lease runs, nobody else finishes its move (it may still be moving).
    assert drain(pipeline) == []
    for claim in store.ledger._claims.values():
        claim["lease_until"] = 0.0  # ... and now its lease has run out
    (result,) = drain(pipeline)  # the next worker (here: the same one restarted)

    assert result.outcome is Outcome.ARCHIVED
    assert store.resources.counts(["acme"]) == {"Patient": 3}
    assert all(doc["meta"]["versionId"] == "1" for doc in store.resources._docs["Patient"].values())
    names = keys(mock_s3, "partners/")
    assert [k for k in names if k.startswith("partners/incoming/")] == []
    assert len([k for k in names if k.startswith("partners/archived/")]) == 1
