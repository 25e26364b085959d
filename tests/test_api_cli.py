"""`dropzone api` and `dropzone run` (api.serve) as real processes: serve on a free port, accept
an upload, process it with the in-process workers, stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from api_support import FINAL_STATES, SIGNING_KEY, make_config, samples_dir

PATIENTS = samples_dir() / "smart-bulk-fhir-10-patients" / "Patient.000.ndjson"
URL = re.compile(r"(http://127\.0\.0\.1:\d+)")


def start(args: list[str], env_extra: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "DROPZONE_API__SIGNING_KEY": SIGNING_KEY, **env_extra}
    env.pop("MONGODB_URI", None)
    handle = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "dropzone", *args], stdout=handle, stderr=handle, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = URL.search(log.read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"server did not start:\n{log.read_text(errors='replace')[-2000:]}")


def push_and_wait(url: str, cred) -> dict:
    with httpx.Client(base_url=url, timeout=30) as client:
        token = client.post(
            "/api/authenticate",
            data={
                "grant_type": "client_credentials",
                "client_id": cred.client_id,
                "client_secret": cred.client_secret,
            },
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        accepted = client.post(
            "/api/batch", params={"name": "p.ndjson"}, content=PATIENTS.read_bytes(), headers=headers
        )
        assert accepted.status_code == 202
        deadline = time.monotonic() + 60
        while True:
            status = client.get(accepted.json()["status_url"], headers=headers).json()
            if status["state"] in FINAL_STATES or time.monotonic() > deadline:
                return status
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.mark.slow
def test_dropzone_api_command_serves_and_processes(tmp_path: Path) -> None:
    creds = make_config(tmp_path, ("acme",))
    args = ["--config", str(tmp_path / "config"), "api", "--zone", str(tmp_path / "zone"), "--port", "0"]
    proc, url = start(args, {"DROPZONE_PIPELINE__QUIET_SECONDS": "0"}, tmp_path / "api.log")
    try:
        status = push_and_wait(url, creds["acme"])
        assert status["state"] == "archived" and status["records"]["loaded"] == 13
        assert httpx.get(f"{url}/openapi.json").status_code == 200
    finally:
        code = stop(proc)
    log = (tmp_path / "api.log").read_text()
    assert code == 0, log[-2000:]
    assert creds["acme"].client_secret not in log and SIGNING_KEY not in log


@pytest.mark.slow
def test_dropzone_run_serves_the_api_when_configured(tmp_path: Path) -> None:
    creds = make_config(tmp_path, ("acme",))
    env = {"DROPZONE_API__SERVE": "true", "DROPZONE_API__PORT": "0", "DROPZONE_PIPELINE__QUIET_SECONDS": "0"}
    args = ["--config", str(tmp_path / "config"), "run", "--zone", str(tmp_path / "zone")]
    proc, url = start(args, env, tmp_path / "run.log")
    try:
        assert push_and_wait(url, creds["acme"])["state"] == "archived"
    finally:
        code = stop(proc)
    assert code == 0, (tmp_path / "run.log").read_text()[-2000:]
