"""localstack/: no Docker engine here, so the compose file is checked by reading it, and the
init script runs its real aws CLI calls against moto's server instead of LocalStack."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from s3_support import AWS_CLI, REGION

from dropzone.sources.s3_events import QueueConsumer

pytest_plugins = ["s3_fixtures"]

LOCALSTACK = Path(__file__).resolve().parents[1] / "localstack"
COMPOSE = LOCALSTACK / "docker-compose.yml"
INIT = LOCALSTACK / "init" / "ready.d" / "10-dropzone.sh"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_declares_the_three_services_on_localhost_only() -> None:
    services = compose()["services"]
    assert set(services) == {"localstack", "mongodb", "sftp"}
    ports = {name: service["ports"] for name, service in services.items()}
    assert ports == {
        "localstack": ["127.0.0.1:4566:4566"],
        "mongodb": ["127.0.0.1:27017:27017"],
        "sftp": ["127.0.0.1:2222:22"],
    }
    env = services["localstack"]["environment"]
    assert set(env["SERVICES"].split(",")) == {"s3", "sqs"}
    for service in services.values():
        assert ":" in service["image"] and not service["image"].endswith(":latest")  # pinned


def test_compose_mounts_point_at_files_in_the_repository() -> None:
    services = compose()["services"]
    (init_mount,) = services["localstack"]["volumes"]
    host, container, mode = init_mount.split(":")
    assert (LOCALSTACK / host).resolve() == INIT.parent
    assert container == "/etc/localstack/init/ready.d" and mode == "ro"
    (key_mount,) = services["sftp"]["volumes"]
    host_key = LOCALSTACK / key_mount.split(":")[0]
    assert host_key.parent.is_dir()  # the user generates the key there (README); it is gitignored
    assert (host_key.parent / ".gitignore").is_file()
    assert os.access(INIT, os.X_OK)


def test_init_script_creates_bucket_queue_and_notification(server_env: dict[str, str]) -> None:
    if not AWS_CLI.exists():
        pytest.skip(f"the aws CLI is not installed in the venv ({AWS_CLI})")
    env = {
        **server_env,
        "PATH": f"{AWS_CLI.parent}:/usr/bin:/bin",  # the venv's aws; no awslocal here
        **{k: str(v) for k, v in compose()["services"]["localstack"]["environment"].items()},
    }
    for _ in range(2):  # running it twice changes nothing
        done = subprocess.run(["bash", str(INIT)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert "zone s3://dropzone/partners" in done.stdout

    s3 = boto3.client("s3", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.get_queue_url(QueueName="dropzone-events")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] in ("10", 10)
    assert json.loads(attrs["Policy"])["Statement"][0]["Principal"] == {"Service": "s3.amazonaws.com"}
    config = s3.get_bucket_notification_configuration(Bucket="dropzone")
    (queue_config,) = config["QueueConfigurations"]
    assert queue_config["Events"] == ["s3:ObjectCreated:*"]

    # The wiring works: an upload under partners/incoming/ reaches the queue, others do not.
    s3.put_object(Bucket="dropzone", Key="partners/incoming/acme/a.ndjson", Body=b"{}")
    s3.put_object(Bucket="dropzone", Key="partners/archived/acme/b.ndjson", Body=b"{}")
    consumer = QueueConsumer(
        sqs, queue_url, lambda e: e.key, wait_seconds=0, visibility_seconds=30, retry_seconds=0
    )
    seen: set[str] = set()
    for _ in range(3):
        seen.update(consumer.receive(1, threading.Event()))
    assert seen == {"partners/incoming/acme/a.ndjson"}
