"""Issue 15, what an operator sees: one test per observation that can be tested without a
terminal (the terminal display is in test_cli_terminal.py)."""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_cli import DROPZONE, _clean_env, _watch, cli

from conftest import BULK
from dropzone.cli import main
from dropzone.config import load_settings
from dropzone.errors import ConfigError

pytest_plugins = ["s3_fixtures"]
REPO = Path(__file__).resolve().parents[1]

# -- 1. logs and JSON mode ---------------------------------------------------------------------------


def test_json_log_mode_puts_only_json_on_stderr(tmp_path: Path) -> None:
    """Messages (a refused tenant, an error) are JSON events too: no rich text on stderr."""
    config = tmp_path / "config"
    (config / "tenants").mkdir(parents=True)
    (config / "dropzone.yaml").write_text("allow_undeclared_tenants: false\n")
    (config / "tenants" / "acme.yaml").write_text("{}\n")
    args = ("--config", str(config), "--log-format", "json", "ingest", str(BULK / "Patient.000.ndjson"))
    refused = cli(*args, "--tenant", "acmee", "--zone", str(tmp_path / "zone"), cwd=tmp_path)
    assert refused.returncode == 2
    events = [json.loads(line) for line in refused.stderr.splitlines()]  # every line is JSON
    (error,) = [e for e in events if e["event"] == "tenant.refused"]
    assert "did you mean 'acme'" in error["message"] and error["level"] == "error"
    ok = cli(*args, "--tenant", "acme", "--zone", str(tmp_path / "zone"), cwd=tmp_path)
    assert ok.returncode == 0
    assert all(line.startswith("{") for line in ok.stderr.splitlines())


# -- 2. progress when stderr is not a terminal -------------------------------------------------------


def test_not_a_terminal_gets_one_progress_line_per_file(tmp_path: Path) -> None:
    files = [str(BULK / "Patient.000.ndjson"), str(BULK / "gzipped" / "Condition.000.ndjson.gz")]
    result = cli("ingest", *files, "--tenant", "acme", "--zone", str(tmp_path / "zone"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("archived")]
    assert len(lines) == 2
    patient = next(line for line in lines if "Patient.000.ndjson" in line)
    assert "incoming/acme/Patient.000.ndjson" in patient and "13 records" in patient
    assert re.search(r"43\.9 kB in \d+\.\d+ s \(\d+\.\d+ [kMG]?B/s, 13 records, [\d,]+ records/s\)", patient)
    assert "━" not in result.stderr and "\r" not in result.stderr  # no live display


# -- 3. tables ----------------------------------------------------------------------------------------


def test_not_a_terminal_summary_shows_whole_names_and_markup_literally(tmp_path: Path) -> None:
    names = ["Practitioner.000.ndjson", "lab[red]results.ndjson", "x" * 150 + ".ndjson"]
    for name in names:
        shutil.copyfile(BULK / "Patient.000.ndjson", tmp_path / name)
    args = [str(tmp_path / n) for n in names]
    result = cli("ingest", *args, "--tenant", "acme", "--zone", str(tmp_path / "zone"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    for name in names:
        assert any(name in row for row in rows), name  # whole, on one row, brackets kept
    assert "…" not in result.stdout


def test_watch_result_lines_show_names_literally(tmp_path: Path) -> None:
    zone = tmp_path / "zone"
    env = _clean_env()
    watcher = subprocess.Popen(
        [DROPZONE, "run", "--zone", str(zone)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        (zone / "incoming" / "acme").mkdir(parents=True, exist_ok=True)
        time.sleep(1.0)
        shutil.copyfile(BULK / "Patient.000.ndjson", zone / "incoming" / "acme" / "a[b]c.ndjson")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((zone / "archived").rglob("*.ndjson")):
            time.sleep(0.2)
    finally:
        watcher.send_signal(signal.SIGTERM)
        out, _err = watcher.communicate(timeout=30)
    assert "acme/a[b]c.ndjson" in out


# -- 4. no hard wrapping ------------------------------------------------------------------------------


def test_zone_in_use_message_is_one_line_with_a_long_path(tmp_path: Path) -> None:
    """test_second_process_on_a_memory_store_zone_is_refused failed when the temp path was long:
    rich wrapped 'is in \\nuse by pid' at 80 columns."""
    zone = tmp_path / ("a-long-folder-name-for-a-drop-zone-" * 4) / "zone"
    env = _clean_env(DROPZONE_STORE__KIND="memory", COLUMNS="80")
    watcher = _watch(zone, env)
    try:
        second = cli("run", "--once", "--zone", str(zone), env=env, cwd=tmp_path)
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.communicate(timeout=30)
    assert second.returncode == 2
    (line,) = [line for line in second.stderr.splitlines() if "in use by pid" in line]
    assert str(zone.resolve()) in line and "store.kind memory" in line


# -- 5. configuration ---------------------------------------------------------------------------------


def test_an_environment_mistake_names_the_variable_not_the_yaml(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "dropzone.yaml").write_text("pipeline:\n  batch_size: 100\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config, env={"DROPZONE_PIPELINE__LEASE_SECONDS": "-1"})
    message = str(err.value)
    assert "pipeline.lease_seconds" in message
    assert "environment variable DROPZONE_PIPELINE__LEASE_SECONDS" in message
    assert "dropzone.yaml" not in message


def test_a_yaml_mistake_names_the_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "tenants").mkdir(parents=True)
    (config / "dropzone.yaml").write_text("pipeline:\n  lease_seconds: -1\n")
    (config / "tenants" / "acme.yaml").write_text("policy: sometimes\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config, env={})
    message = str(err.value)
    assert f"{config / 'dropzone.yaml'}, key pipeline.lease_seconds" in message
    assert f"{config / 'tenants' / 'acme.yaml'}, key policy" in message


def test_unknown_dropzone_variables_warn_and_do_not_stop(caplog: pytest.LogCaptureFixture) -> None:
    env = {"DROPZONE_PIPELINE__POLCY": "file", "DROPZONE_SOMETHING_ELSE": "1", "DROPZONE_FOLDER_POLLING": "1"}
    with caplog.at_level(logging.WARNING, logger="dropzone.config"):
        settings = load_settings(None, env=env)
    assert settings.folder_polling is True and settings.pipeline.policy == "record"
    warned = {r.dz_fields["variable"]: r.dz_fields["hint"] for r in caplog.records}  # type: ignore[attr-defined]
    assert set(warned) == {"DROPZONE_PIPELINE__POLCY", "DROPZONE_SOMETHING_ELSE"}
    assert warned["DROPZONE_PIPELINE__POLCY"] == "DROPZONE_PIPELINE__POLICY"


def test_folder_polling_is_a_setting_from_yaml_and_env(tmp_path: Path) -> None:
    from dropzone.sources import open_source

    config = tmp_path / "config"
    config.mkdir()
    (config / "dropzone.yaml").write_text(f"folder_polling: true\nzone: {tmp_path / 'zone'}\n")
    assert load_settings(config, env={}).folder_polling is True
    assert load_settings(None, env={"DROPZONE_FOLDER_POLLING": "false"}).folder_polling is False
    settings = load_settings(config, env={})
    source = open_source(settings.zone, settings)
    try:
        assert source._polling is True  # the folder source polls (NFS/SMB) as configured
    finally:
        source.close()


def test_every_setting_is_documented_in_the_readme() -> None:
    """Top-level, store, pipeline and logging keys in the Configuration table; the s3, api and
    sftp sections in their own tables, by key name."""
    from dropzone.config import Settings, _all_paths

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    undocumented = []
    for path in _all_paths(Settings):
        if path[0] in ("tenants", "config_dir"):
            continue
        name = path[-1] if path[0] in ("s3", "api", "sftp") else ".".join(path)
        documented = (
            f"`{name}`" in readme
            or (path[0] == "sftp" and f"  {name}:" in readme)  # the SFTP section's YAML example
            or f"DROPZONE_{'__'.join(path).upper()}" in readme
        )
        if not documented:
            undocumented.append(".".join(path))
    assert undocumented == []
    assert "DROPZONE_CONFIG" in readme and "MONGODB_URI" in readme and "DROPZONE_FOLDER_POLLING" in readme


# -- 7. tenants ---------------------------------------------------------------------------------------


def test_a_capitalised_tenant_flag_is_told_the_lower_case_name(tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "tenants").mkdir(parents=True)
    (config / "tenants" / "acme.yaml").write_text("{}\n")
    args = ("--config", str(config), "ingest", str(BULK / "Patient.000.ndjson"), "--tenant", "Acme")
    result = cli(*args, "--zone", str(tmp_path / "zone"), cwd=tmp_path)
    assert result.returncode == 2
    assert "use --tenant acme" in result.stderr
    assert not (tmp_path / "zone" / "incoming").exists()


# -- 8. exit codes ------------------------------------------------------------------------------------


def test_an_unreadable_input_file_is_a_usage_error_before_copying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests run as root, which reads any file: the refusal is simulated at open()."""
    real_open = Path.open

    def guarded(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if self.name == "locked.ndjson":
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    locked = tmp_path / "locked.ndjson"
    shutil.copyfile(BULK / "Patient.000.ndjson", locked)
    monkeypatch.setattr(Path, "open", guarded)
    zone = tmp_path / "zone"
    result = CliRunner().invoke(main, ["ingest", str(locked), "--tenant", "acme", "--zone", str(zone)])
    assert result.exit_code == 2
    assert f"cannot read {locked}: Permission denied" in result.output
    assert not (zone / "incoming" / "acme" / "locked.ndjson").exists()


def test_a_missing_bucket_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moto = pytest.importorskip("moto")
    from s3_support import fake_aws_env

    for name, value in fake_aws_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    with moto.mock_aws():
        result = CliRunner().invoke(main, ["status", "--zone", "s3://no-such-bucket/x"])
    assert result.exit_code == 2
    assert "no-such-bucket does not exist" in result.output


# -- 9 (issue's 8). README's LocalStack step -------------------------------------------------------


def test_the_readme_queue_url_step_works_with_only_aws_endpoint_url(server_env: dict[str, str]) -> None:
    """awscli 1.x sends SQS calls to AWS itself unless --endpoint-url is given: run the
    README's line as written against moto with only AWS_ENDPOINT_URL set."""
    import boto3
    from s3_support import AWS_CLI, REGION

    if not AWS_CLI.exists():
        pytest.skip(f"the aws CLI is not installed in the venv ({AWS_CLI})")
    readme = (REPO / "README.md").read_text()
    start = readme.index("QUEUE_URL=$(")
    step = readme[start : readme.index(")", readme.index("--output text", start)) + 1]
    assert "--endpoint-url" in step
    boto3.client("sqs", region_name=REGION).create_queue(QueueName="dropzone-events")
    done = subprocess.run(
        ["bash", "-c", f'{step}\necho "$QUEUE_URL"'],
        cwd=REPO,
        env={**server_env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("/dropzone-events")
    for line in readme.splitlines():  # every aws call of the section passes the endpoint
        if line.startswith(("QUEUE_URL=$(.venv/bin/aws", ".venv/bin/aws ")):
            assert "--endpoint-url" in line, line


# -- 10. command line ---------------------------------------------------------------------------------


def test_global_options_also_follow_the_subcommand(tmp_path: Path) -> None:
    result = cli("status", "--zone", str(tmp_path / "zone"), "--json", "--log-format", "json", cwd=tmp_path)
    assert result.returncode == 0
    assert all(json.loads(line) for line in result.stderr.splitlines())
    config = tmp_path / "config"
    config.mkdir()
    (config / "dropzone.yaml").write_text("pipeline:\n  polcy: file\n")
    typo = cli("status", "--config", str(config), cwd=tmp_path)
    assert typo.returncode == 2 and "pipeline.polcy" in typo.stderr


def test_profile_and_region_reach_the_s3_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("boto3")
    from s3_support import fake_aws_env

    from dropzone.config import S3Settings
    from dropzone.sources.s3_client import make_client

    env = fake_aws_env(tmp_path)
    (tmp_path / "aws-config").write_text("[profile partner]\nregion = eu-west-3\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_DEFAULT_REGION")  # the profile's region, unless the environment says one
    client = make_client("s3", S3Settings(profile="partner"))
    assert client.meta.region_name == "eu-west-3"
    assert make_client("s3", S3Settings(profile="partner", region="ca-central-1")).meta.region_name == (
        "ca-central-1"
    )
    result = CliRunner().invoke(main, ["status", "--zone", "s3://dz-test/x", "--profile", "nope"])
    assert result.exit_code == 2 and "AWS profile 'nope'" in result.output


def test_report_paths_are_printed_relative_to_the_working_directory(tmp_path: Path) -> None:
    broken = tmp_path / "broken.ndjson"
    broken.write_text("{not json\n")
    result = cli("ingest", str(broken), "--tenant", "acme", "--zone", "zone", cwd=tmp_path)
    assert result.returncode == 3
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("report for")]
    path = line.split(": ", 1)[1]
    assert path.startswith("zone/quarantine/acme/") and (tmp_path / path).is_file()


def test_stopping_an_idle_worker_is_quick_and_says_no_file_is_in_progress(tmp_path: Path) -> None:
    env = _clean_env()
    watcher = subprocess.Popen(
        [DROPZONE, "run", "--zone", str(tmp_path / "zone")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    time.sleep(2.0)
    started = time.monotonic()
    watcher.send_signal(signal.SIGINT)
    _out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert time.monotonic() - started < 3
    assert "no file in progress" in err and "finishing the current file" not in err
