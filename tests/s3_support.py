"""Helpers for the S3 tests: fake AWS credentials, notification wiring, settings, and a store
shared between worker processes. The fixtures are in ``s3_fixtures.py`` (a test module opts in
with ``pytest_plugins = ["s3_fixtures"]``)."""

from __future__ import annotations

import json
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any

from dropzone.config import Settings, load_settings
from dropzone.sources.s3 import S3Source
from dropzone.store.base import Store
from dropzone.store.memory import MemoryStore

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "s3"
BUCKET = "dz-test"
REGION = "us-east-1"
AWS_CLI = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "aws"


def fake_aws_env(home: Path) -> dict[str, str]:
    """Credentials that can only ever reach moto, and no user config leaking in."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def s3_settings(
    zone: str, tmp_path: Path | None = None, s3: dict[str, Any] | None = None, **pipeline: Any
) -> Settings:
    settings = load_settings(config_dir=None, env={}, zone=zone, s3=s3 or {})
    options: dict[str, Any] = {"validation_workers": 0, "quiet_seconds": 0.0}
    if tmp_path is not None:
        options["temp_dir"] = str(tmp_path)
    options.update(pipeline)
    return settings.model_copy(update={"pipeline": settings.pipeline.model_copy(update=options)})


def make_source(prefix: str = "", **s3: Any) -> S3Source:
    settings = s3_settings(f"s3://{BUCKET}/{prefix}".rstrip("/"), s3=s3)
    return S3Source(BUCKET, f"{prefix.strip('/')}/" if prefix else "", settings.s3)


def notified_queue(s3: Any, sqs: Any, prefix: str = "", name: str = "dz-events") -> str:
    """A queue receiving the bucket's ObjectCreated events under ``<prefix>incoming/``: the same
    calls localstack/init/ready.d/10-dropzone.sh makes with the aws CLI."""
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": f"{prefix}incoming/"}]}},
                }
            ]
        },
    )
    return queue_url


def queue_depth(sqs: Any, queue_url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def keys(s3: Any, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def read_json(s3: Any, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def patients(n: int, start: int = 0) -> bytes:
    """``n`` distinct valid Patients (the fixture's first patient with new ids)."""
    template = json.loads((FIXTURES / "patients.ndjson").read_text().splitlines()[0])
    lines = [json.dumps({**template, "id": f"s3-test-{i}"}) for i in range(start, start + n)]
    return ("\n".join(lines) + "\n").encode()


# -- one store shared by worker processes ----------------------------------------------------------

_SHARED: MemoryStore | None = None


def _shared() -> MemoryStore:
    global _SHARED
    if _SHARED is None:
        _SHARED = MemoryStore()
    return _SHARED


class StoreManager(BaseManager):
    """Serves one MemoryStore to several processes, as MongoDB would: every ledger and resource
    call from a worker runs in the manager process, so leases and upserts are really shared."""


def _shared_resources() -> Any:
    return _shared().resources


def _shared_ledger() -> Any:
    return _shared().ledger


StoreManager.register("resources", callable=_shared_resources)
StoreManager.register("ledger", callable=_shared_ledger)


class SharedStore(Store):
    """A worker's view of the manager's store."""

    persistent = True
    description = "shared in-memory store (tests)"

    def __init__(self, address: Any, authkey: bytes) -> None:
        self._manager = StoreManager(address=address, authkey=authkey)
        self._manager.connect()
        self.resources = self._manager.resources()  # type: ignore[attr-defined]
        self.ledger = self._manager.ledger()  # type: ignore[attr-defined]

    def close(self) -> None:
        """The manager owns the data; nothing to release here."""
