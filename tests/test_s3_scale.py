"""Horizontal scale on one bucket and one queue: separate worker processes, one shared store
(served to them as MongoDB would be), moto's HTTP server for S3 and SQS."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from s3_support import BUCKET, REGION, SharedStore, StoreManager, keys, notified_queue, patients, queue_depth
from s3_worker import run_worker

pytest_plugins = ["s3_fixtures"]

ZONE = f"s3://{BUCKET}/partners"
SPAWN = multiprocessing.get_context("spawn")
pytestmark = pytest.mark.slow


@pytest.fixture
def shared_store() -> Iterator[tuple[StoreManager, SharedStore, bytes]]:
    authkey = os.urandom(16)
    manager = StoreManager(address=("127.0.0.1", 0), authkey=authkey, ctx=SPAWN)
    manager.start()
    try:
        yield manager, SharedStore(manager.address, authkey), authkey
    finally:
        manager.shutdown()


@pytest.fixture
def zone(server_env: dict[str, str]) -> tuple[Any, Any, str]:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    sqs = boto3.client("sqs", region_name=REGION)
    return s3, sqs, notified_queue(s3, sqs, prefix="partners/")


class Workers:
    def __init__(self, env: dict[str, str], manager: StoreManager, authkey: bytes, queue_url: str) -> None:
        self.env = env
        self.manager = manager
        self.authkey = authkey
        self.queue_url = queue_url
        # One stop event per worker: a multiprocessing Event's set() waits for every process
        # sleeping on it to wake, and a killed worker never does.
        self.processes: list[tuple[Any, Any]] = []

    def start(self, worker_id: str, hang: bool = False, **pipeline: Any) -> Any:
        ready, stop = SPAWN.Event(), SPAWN.Event()
        s3_options = {
            "queue_url": self.queue_url,
            "poll_seconds": 1,
            "visibility_seconds": 10,
            "retry_seconds": 1,
        }
        options = {"lease_seconds": 3.0, "rescan_seconds": 2.0, "batch_size": 10, **pipeline}
        process = SPAWN.Process(
            target=run_worker,
            args=(self.env, ZONE, s3_options, options, self.manager.address, self.authkey, worker_id),
            kwargs={"ready": ready, "stop": stop, "hang_after_first_batch": hang},
            daemon=True,
        )
        process.start()
        self.processes.append((process, stop))
        if not ready.wait(120):
            raise AssertionError(f"worker {worker_id} did not start")
        return process

    def close(self) -> None:
        for process, stop in self.processes:
            if process.is_alive():
                stop.set()
        for process, _ in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()


@pytest.fixture
def workers(server_env: dict[str, str], shared_store: Any, zone: Any) -> Iterator[Workers]:
    manager, _, authkey = shared_store
    pool = Workers(server_env, manager, authkey, zone[2])
    yield pool
    pool.close()


def wait_until(condition: Any, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.2)


def finished(store: SharedStore) -> list[dict[str, Any]]:
    return [r for r in store.ledger.files(limit=1000) if r.get("state") not in (None, "processing")]


def test_two_workers_on_one_queue_process_each_of_50_files_once(
    workers: Workers, shared_store: Any, zone: Any
) -> None:
    store = shared_store[1]
    s3, sqs, queue_url = zone
    workers.start("worker-a")
    workers.start("worker-b")
    for i in range(50):
        s3.put_object(
            Bucket=BUCKET, Key=f"partners/incoming/acme/drop-{i:02d}.ndjson", Body=patients(2, start=2 * i)
        )

    # The ledger has each outcome just before the file is moved: wait for both.
    wait_until(lambda: len(finished(store)) >= 50 and not keys(s3, "partners/incoming/"))
    wait_until(lambda: queue_depth(sqs, queue_url) == 0)  # every notification deleted after its outcome

    records = finished(store)
    assert len(records) == 50
    assert Counter(r["state"] for r in records) == {"archived": 50}
    assert len({r["key"] for r in records}) == 50
    assert all(r["attempt"] == 1 for r in records)
    assert store.resources.counts(["acme"]) == {"Patient": 100}
    archived = keys(s3, "partners/archived/")
    assert len(archived) == 50 and not [k for k in archived if ".2." in k]
    assert keys(s3, "partners/incoming/") == []
    assert {r["worker"] for r in records} <= {"worker-a", "worker-b"}


def test_a_worker_killed_mid_file_is_replaced_after_its_lease_expires(
    workers: Workers, shared_store: Any, zone: Any
) -> None:
    store = shared_store[1]
    s3, _, _ = zone
    doomed = workers.start("doomed", hang=True)
    s3.put_object(Bucket=BUCKET, Key="partners/incoming/acme/big.ndjson", Body=patients(60))

    # It has stored its first batch of 10 and hangs with the lease still renewed.
    wait_until(lambda: store.resources.counts(["acme"]).get("Patient") == 10)
    (record,) = store.ledger.files(limit=10)
    assert record["state"] == "processing" and record["worker"] == "doomed"
    doomed.kill()
    doomed.join()

    workers.start("rescuer")
    wait_until(lambda: len(finished(store)) == 1 and not keys(s3, "partners/incoming/"))

    (record,) = store.ledger.files(limit=10)
    assert record["state"] == "archived" and record["worker"] == "rescuer"
    assert record["attempt"] == 2 and record["counts"]["loaded"] == 60
    assert store.resources.counts(["acme"]) == {"Patient": 60}
    assert len(keys(s3, "partners/archived/")) == 1
    assert keys(s3, "partners/incoming/") == []
