"""Over real HTTP against moto's ThreadedMotoServer: the real aws CLI, the SQS notification path,
the dropzone CLI, and the memory bound of downloads."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from s3_support import AWS_CLI, BUCKET, FIXTURES, REGION, keys, notified_queue, queue_depth, s3_settings

from dropzone.models import Outcome
from dropzone.pipeline.runner import Pipeline
from dropzone.sources.s3 import S3Source
from dropzone.store.memory import MemoryStore
from dropzone.watcher import Watcher

pytest_plugins = ["s3_fixtures"]

REPO = Path(__file__).resolve().parents[1]
MiB = 2**20


@pytest.fixture
def clients(server_env: dict[str, str]) -> tuple[Any, Any]:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    return s3, boto3.client("sqs", region_name=REGION)


def aws(env: dict[str, str], *args: str) -> str:
    if not AWS_CLI.exists():
        pytest.skip(f"the aws CLI is not installed in the venv ({AWS_CLI})")
    done = subprocess.run([str(AWS_CLI), *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def dropzone_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dropzone", *args],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def wait_until(condition: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def test_aws_cli_upload_is_picked_up_through_the_sqs_notification(
    clients: tuple[Any, Any], server_env: dict[str, str], tmp_path: Path
) -> None:
    s3, sqs = clients
    queue_url = notified_queue(s3, sqs, prefix="partners/")
    settings = s3_settings(
        f"s3://{BUCKET}/partners",
        tmp_path,
        s3={"queue_url": queue_url, "poll_seconds": 1},
        rescan_seconds=3600,  # no periodic listing: only the notification can wake the watcher
    )
    source = S3Source(BUCKET, "partners/", settings.s3, temp_dir=str(tmp_path))
    notified: list[str] = []
    acknowledged: list[tuple[str, bool]] = []
    wait, ack = source.wait_for_activity, source.acknowledge

    def recording_wait(timeout: float, stop: threading.Event) -> set[str]:
        found = wait(timeout, stop)
        notified.extend(found)
        return found

    def recording_ack(key: str, *, processed: bool = True) -> None:
        acknowledged.append((key, processed))
        ack(key, processed=processed)

    source.wait_for_activity = recording_wait  # type: ignore[method-assign]
    source.acknowledge = recording_ack  # type: ignore[method-assign]
    store = MemoryStore()
    results: list[Any] = []
    stop = threading.Event()
    with Pipeline(settings, store, source, worker_id="sqs-worker") as pipeline:
        watcher = Watcher(pipeline, source, settings, on_result=results.append)
        thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        thread.start()
        try:
            aws(
                server_env,
                "s3",
                "cp",
                str(FIXTURES / "patients.ndjson"),
                f"s3://{BUCKET}/partners/incoming/acme/2026 batch/patients.ndjson",
            )
            wait_until(lambda: results)
        finally:
            stop.set()
            thread.join(timeout=30)
    source.close()

    (result,) = results
    key = "incoming/acme/2026 batch/patients.ndjson"
    assert result.outcome is Outcome.ARCHIVED and result.key == key
    assert key in notified  # the space arrived URL-encoded and was decoded
    assert (key, True) in acknowledged
    assert store.resources.counts(["acme"]) == {"Patient": 3}
    assert queue_depth(sqs, queue_url) == 0  # deleted once the outcome was recorded
    listing = aws(server_env, "s3", "ls", "--recursive", f"s3://{BUCKET}/partners/")
    assert "archived/acme/" in listing and "incoming/" not in listing


def test_cli_ingest_and_run_once_print_the_json_summary(
    clients: tuple[Any, Any], server_env: dict[str, str], tmp_path: Path
) -> None:
    s3, _ = clients
    env = {
        **server_env,
        "DROPZONE_PIPELINE__VALIDATION_WORKERS": "0",
        "DROPZONE_PIPELINE__TEMP_DIR": str(tmp_path),
    }
    zone = f"s3://{BUCKET}/partners"

    ingested = dropzone_cli(
        env, "ingest", str(FIXTURES / "organizations.ndjson"), "--tenant", "acme", "--zone", zone, "--json"
    )
    assert ingested.returncode == 0, ingested.stderr
    summary = json.loads(ingested.stdout)
    assert [f["outcome"] for f in summary["files"]] == ["archived"]
    assert summary["resources"] == {"Organization": 5}

    aws(env, "s3", "cp", str(FIXTURES / "patients.ndjson"), f"{zone}/incoming/acme/patients.ndjson")
    aws(env, "s3", "cp", str(FIXTURES / "all-invalid.ndjson"), f"{zone}/incoming/acme/all-invalid.ndjson")
    ran = dropzone_cli(env, "run", "--once", "--json", "--zone", zone)
    assert ran.returncode == 3, ran.stderr  # some file quarantined
    summary = json.loads(ran.stdout)
    outcomes = {f["name"]: f["outcome"] for f in summary["files"]}
    assert outcomes == {"patients.ndjson": "archived", "all-invalid.ndjson": "quarantined"}
    report = next(f["report"] for f in summary["files"] if f["name"] == "all-invalid.ndjson")
    assert f"partners/{report}" in keys(s3, "partners/quarantine/")
    assert "testing" not in ran.stderr  # the (fake) credentials never reach the logs


def test_cli_accepts_queue_and_endpoint_options(
    clients: tuple[Any, Any], server_env: dict[str, str], tmp_path: Path
) -> None:
    s3, sqs = clients
    queue_url = notified_queue(s3, sqs)
    env = {k: v for k, v in server_env.items() if k != "AWS_ENDPOINT_URL"}
    env["DROPZONE_PIPELINE__VALIDATION_WORKERS"] = "0"
    s3.put_object(
        Bucket=BUCKET, Key="incoming/acme/orgs.ndjson", Body=(FIXTURES / "organizations.ndjson").read_bytes()
    )
    ran = dropzone_cli(
        env,
        "run",
        "--once",
        "--json",
        "--zone",
        f"s3://{BUCKET}",
        "--endpoint-url",
        server_env["AWS_ENDPOINT_URL"],
        "--queue-url",
        queue_url,
    )
    assert ran.returncode == 0, ran.stderr
    assert [f["outcome"] for f in json.loads(ran.stdout)["files"]] == ["archived"]


def test_download_memory_stays_bounded_for_a_large_object(server_env: dict[str, str], tmp_path: Path) -> None:
    """Measured in a child process, so the moto server in this one does not count."""
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    big = tmp_path / "big.ndjson"
    with big.open("wb") as out:
        for i in range(48):
            out.write(bytes([65 + i % 26]) * MiB)
    s3.upload_file(str(big), BUCKET, "incoming/acme/big.ndjson")  # multipart: 6 parts of 8 MiB
    script = textwrap.dedent(
        f"""
        import hashlib, json, tracemalloc
        from dropzone.config import S3Settings
        from dropzone.sources.s3 import S3Source
        source = S3Source({BUCKET!r}, "", S3Settings(read_chunk_bytes=256 * 1024), temp_dir={str(tmp_path)!r})
        (file,) = source.list_incoming()
        tracemalloc.start()
        with source.local_copy(file) as path:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(json.dumps({{"peak": peak, "sha256": digest, "etag": file.etag}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=server_env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    assert measured["etag"].endswith("-6")
    assert measured["peak"] < 4 * MiB  # a 48 MiB object through a 256 KiB read chunk
