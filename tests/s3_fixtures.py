"""Fixtures for the S3 tests: moto in-process and moto's HTTP server (S3 and SQS).

A test module opts in with ``pytest_plugins = ["s3_fixtures"]``.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from s3_support import BUCKET, REGION, fake_aws_env


@pytest.fixture
def aws_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    env = fake_aws_env(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def mock_s3(aws_env: dict[str, str]) -> Iterator[Any]:
    """moto in-process with one empty bucket; yields an S3 client."""
    import moto

    with moto.mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's real HTTP server (S3 and SQS), shared by the session; reset per test."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def server_env(
    moto_endpoint: str, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    """Environment for code (and child processes) talking to the moto server over HTTP; the
    embedded store of a bucket zone goes to the test's folder, not ./dropzone-data."""
    request = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    store = str(tmp_path / "dropzone-data" / "dropzone.sqlite")
    return {**aws_env, "AWS_ENDPOINT_URL": moto_endpoint, "DROPZONE_STORE__PATH": store}
