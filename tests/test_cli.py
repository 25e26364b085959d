"""The real `dropzone` console script, as users run it (subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BULK, HL7

DROPZONE = shutil.which("dropzone", path=str(Path(sys.executable).parent)) or "dropzone"


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 180):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DROPZONE_", "MONGODB_"))}
    base["DROPZONE_PIPELINE__VALIDATION_WORKERS"] = "0"
    base["DROPZONE_PIPELINE__QUIET_SECONDS"] = "0"
    base.update(env or {})
    return subprocess.run(
        [DROPZONE, *args], capture_output=True, text=True, env=base, cwd=cwd, timeout=timeout
    )


@pytest.mark.parametrize("command", [[], ["run"], ["ingest"], ["status"], ["export"], ["replay"], ["demo"]])
def test_every_command_has_help(command: list[str], tmp_path: Path) -> None:
    result = cli(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "Usage: dropzone" in result.stdout
    assert len(result.stdout.splitlines()) > 4


def test_ingest_json_summary_and_exit_codes(tmp_path: Path) -> None:
    zone = tmp_path / "zone"
    good = cli(
        "ingest",
        str(BULK / "Patient.000.ndjson"),
        str(BULK / "gzipped" / "Condition.000.ndjson.gz"),
        "--tenant",
        "acme",
        "--zone",
        str(zone),
        "--json",
        cwd=tmp_path,
    )
    assert good.returncode == 0, good.stderr
    summary = json.loads(good.stdout)
    assert set(summary) == {"files", "resources"}
    assert summary["resources"] == {"Condition": 555, "Patient": 13}
    for item in summary["files"]:
        assert set(item) == {"name", "tenant", "key", "outcome", "records", "reason", "destination", "report"}
        assert item["key"] == f"incoming/acme/{item['name']}" and item["destination"].startswith(
            "archived/acme/"
        )
        assert item["outcome"] == "archived" and item["report"] is None and item["tenant"] == "acme"
        assert set(item["records"]) == {"read", "loaded", "unchanged", "rejected"}

    bad = cli(
        "ingest",
        str(HL7 / "fhir-test-cases" / "r4-caredove-bundle.json"),
        "--tenant",
        "acme",
        "--zone",
        str(zone),
        "--json",
        cwd=tmp_path,
    )
    assert bad.returncode == 3
    (item,) = json.loads(bad.stdout)["files"]
    assert item["outcome"] == "quarantined"
    assert (zone / item["report"]).is_file()


def test_usage_and_configuration_errors_exit_2(tmp_path: Path) -> None:
    assert cli("ingest", str(BULK / "Patient.000.ndjson"), cwd=tmp_path).returncode == 2  # no --tenant
    bad_tenant = cli("ingest", str(BULK / "Patient.000.ndjson"), "--tenant", "Bad Name!", cwd=tmp_path)
    assert bad_tenant.returncode == 2
    bad_config = cli(
        "run",
        "--once",
        "--zone",
        str(tmp_path / "z"),
        cwd=tmp_path,
        env={"DROPZONE_PIPELINE__BATCH_SIZE": "-5"},
    )
    assert bad_config.returncode == 2
    assert "pipeline.batch_size" in bad_config.stderr
    config = tmp_path / "config"
    config.mkdir()
    (config / "dropzone.yaml").write_text("pipeline:\n  polcy: file\n")
    typo = cli("--config", str(config), "status", cwd=tmp_path)
    assert typo.returncode == 2 and "pipeline.polcy" in typo.stderr
    assert cli("run", "--zone", "ftp://example.org/x", "--once", cwd=tmp_path).returncode == 2


def _watch(zone: Path, env: dict[str, str]) -> subprocess.Popen:
    watcher = subprocess.Popen(
        [DROPZONE, "--log-format", "json", "run", "--zone", str(zone)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert watcher.stderr is not None
    for line in watcher.stderr:
        if '"watch.started"' in line:
            break
    return watcher


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DROPZONE_", "MONGODB_"))}
    env.update(DROPZONE_PIPELINE__VALIDATION_WORKERS="0", DROPZONE_PIPELINE__QUIET_SECONDS="0.2", **extra)
    return env


def test_the_sqlite_default_is_shared_by_processes_and_outlives_them(tmp_path: Path) -> None:
    zone = tmp_path / "zone"
    env = _clean_env()
    watcher = _watch(zone, env)
    try:
        during = cli("status", "--zone", str(zone), "--json", env=env, cwd=tmp_path)
        assert during.returncode == 0, during.stderr  # a second process is welcome on SQLite
        assert json.loads(during.stdout)["store"].startswith("SQLite database")

        (zone / "incoming" / "acme").mkdir(parents=True)
        shutil.copy(BULK / "Patient.000.ndjson", zone / "incoming" / "acme" / "p.ndjson")
        deadline = time.monotonic() + 60
        while not list((zone / "archived").rglob("p.ndjson")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list((zone / "archived").rglob("p.ndjson"))
    finally:
        watcher.send_signal(signal.SIGTERM)
        _out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err[-2000:]
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "watch.stopped" in events and "file.finished" in events

    after = cli("status", "--zone", str(zone), "--json", env=env, cwd=tmp_path)
    status = json.loads(after.stdout)
    assert status["files"] == {"acme": {"archived": 1}}
    assert status["resources"] == {"acme": {"Patient": 13}}
    assert status["recent"][0]["name"] == "p.ndjson" and status["recent"][0]["state"] == "archived"


def test_second_process_on_a_memory_store_zone_is_refused(tmp_path: Path) -> None:
    zone = tmp_path / "zone"
    env = _clean_env(DROPZONE_STORE__KIND="memory")
    watcher = _watch(zone, env)
    try:
        second = cli("run", "--once", "--zone", str(zone), env=env, cwd=tmp_path)
        assert second.returncode == 2
        # One line, never wrapped (see test_cli_operator for a long path at 80 columns).
        assert any("is in use by pid" in line for line in second.stderr.splitlines())
        assert "store.kind memory" in second.stderr
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.communicate(timeout=30)
    assert watcher.returncode == 0


def test_replay_moves_a_quarantined_file_back_and_it_loads_after_a_fix(tmp_path: Path) -> None:
    zone = tmp_path / "zone"
    small = {"DROPZONE_PIPELINE__MAX_FILE_BYTES": "1000"}
    first = cli(
        "ingest",
        str(BULK / "Patient.000.ndjson"),
        "--tenant",
        "acme",
        "--zone",
        str(zone),
        "--json",
        env=small,
        cwd=tmp_path,
    )
    assert first.returncode == 3
    (item,) = json.loads(first.stdout)["files"]
    quarantined = item["report"].removesuffix(".error.json")

    replay = cli("replay", quarantined, "--zone", str(zone), cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert (zone / "incoming" / "acme" / "Patient.000.ndjson").is_file()
    assert not (zone / quarantined).exists()

    again = cli("run", "--once", "--zone", str(zone), "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["files"][0]["outcome"] == "archived"


def test_demo_runs_the_bundled_drops(tmp_path: Path) -> None:
    result = cli("demo", "--zone", str(tmp_path / "demo"), "--json", cwd=tmp_path)
    assert result.returncode == 3  # the demo includes a partial and a quarantined file on purpose
    summary = json.loads(result.stdout)
    outcomes = sorted(f["outcome"] for f in summary["files"])
    assert outcomes.count("archived") >= 4 and "partial" in outcomes and "quarantined" in outcomes
    assert summary["resources"]["Patient"] >= 13
    assert (tmp_path / "demo" / ".dropzone" / "dropzone.sqlite").is_file()  # `status --zone` shows it later


def test_status_and_json_logs(tmp_path: Path) -> None:
    result = cli("--log-format", "json", "status", "--zone", str(tmp_path / "zone"), "--json", cwd=tmp_path)
    assert result.returncode == 0
    status = json.loads(result.stdout)
    assert status["persistent"] is True and status["incoming"] == 0
    assert status["store"] == f"SQLite database {tmp_path / 'zone' / '.dropzone' / 'dropzone.sqlite'}"
    assert (status["files"], status["resources"]) == ({}, {})
    logs = [json.loads(line) for line in result.stderr.splitlines()]
    assert {"ts", "level", "event"} <= set(logs[0])


def test_a_bug_escaping_a_command_is_one_event_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import dropzone.cli as cli_module
    import dropzone.cli.store as store_commands

    def broken(_settings: object) -> None:
        raise RuntimeError("a value from a file")

    monkeypatch.setattr(store_commands, "open_store_and_source", broken)
    args = ["--log-format", "json", "status", "--zone", str(tmp_path / "zone")]
    result = CliRunner().invoke(cli_module.main, args)
    assert result.exit_code == 1
    assert "internal error (RuntimeError)" in result.output
    assert "Traceback" not in result.output and "a value from a file" not in result.output
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    (failed,) = [e for e in events if e["event"] == "cli.failed"]
    assert failed["error_type"] == "RuntimeError" and failed["level"] == "error"


def test_error_messages_are_one_line_and_never_markup(tmp_path: Path) -> None:
    """Rich hard-wrapped at 80 columns (a suggested command split in two) and read `[x]` as markup."""
    missing = tmp_path / ("a-rather-long-folder-name-" * 4) / "[bold]not-there"
    result = cli(
        "run", "--once", "--zone", str(tmp_path / "zone"), env={"DROPZONE_PIPELINE__TEMP_DIR": str(missing)}
    )
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert str(missing) in line and len(line) > 120  # the whole path, on one line, brackets kept


def test_the_summary_table_folds_names_and_shows_brackets(tmp_path: Path) -> None:
    source = tmp_path / "lab[red]results-with-a-long-name-that-does-not-fit.ndjson"
    shutil.copyfile(BULK / "Patient.000.ndjson", source)
    result = cli("ingest", str(source), "--tenant", "acme", "--zone", str(tmp_path / "zone"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout  # nothing cut
    (row,) = [line for line in result.stdout.splitlines() if "lab[red]" in line]
    assert "lab[red]results-with-a-long-name-that-does-not-fit.ndjson" in row
    assert "unchanged" in result.stdout  # headers whole too


def _declared_config(tmp_path: Path) -> Path:
    config = tmp_path / "config"
    (config / "tenants").mkdir(parents=True)
    (config / "dropzone.yaml").write_text("allow_undeclared_tenants: false\n")
    (config / "tenants" / "acme.yaml").write_text("display_name: Acme Health\n")
    return config


def test_ingest_for_an_undeclared_tenant_is_refused_before_copying(tmp_path: Path) -> None:
    zone = tmp_path / "zone"
    args = ("--config", str(_declared_config(tmp_path)), "ingest", str(BULK / "Patient.000.ndjson"))
    result = cli(*args, "--tenant", "acmee", "--zone", str(zone), cwd=tmp_path)
    assert result.returncode == 2
    assert "tenant 'acmee' is not declared" in result.stderr and "(declared: acme)" in result.stderr
    assert "did you mean 'acme'?" in result.stderr
    assert not (zone / "incoming").exists() or not any((zone / "incoming").rglob("*.ndjson"))


def test_a_capitalised_tenant_folder_is_told_to_use_lower_case(tmp_path: Path) -> None:
    zone = tmp_path / "zone"
    (zone / "incoming" / "Acme").mkdir(parents=True)
    shutil.copyfile(BULK / "Patient.000.ndjson", zone / "incoming" / "Acme" / "p.ndjson")
    result = cli("--config", str(_declared_config(tmp_path)), "run", "--once", "--zone", str(zone), "--json")
    assert result.returncode == 3
    (item,) = json.loads(result.stdout)["files"]
    assert item["key"] == "incoming/Acme/p.ndjson" and item["reason"] == "unknown_tenant"
    assert item["destination"] == item["report"].removesuffix(".error.json")
    report = json.loads((zone / item["report"]).read_text())
    assert "use incoming/acme/" in report["error"]["message"]


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("mongodb://dz:s3cret-pw@127.0.0.1:1/?authSource=admin", "cannot reach MongoDB at 127.0.0.1:1"),
        ("mongodb://dz:s3cret-pw@host:notaport/", "not a valid MongoDB connection string"),
    ],
)
def test_a_wrong_mongodb_uri_says_where_and_why_without_the_password(
    tmp_path: Path, uri: str, said: str
) -> None:
    env = {"MONGODB_URI": uri, "DROPZONE_STORE__CONNECT_TIMEOUT_SECONDS": "0.5"}
    result = cli("status", "--zone", str(tmp_path / "zone"), env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert said in result.stderr and "s3cret-pw" not in result.stderr + result.stdout
    assert "check" in result.stderr or "expected mongodb://" in result.stderr


def test_a_file_that_could_not_be_finished_is_said_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the failed attempt returned nothing, so `ingest` printed no row and exited 0."""
    from click.testing import CliRunner

    import dropzone.cli as cli_module
    from dropzone.pipeline import runner

    real_sha = runner.sha256_file

    def unreadable(path: Path) -> str:
        if path.name.startswith("Patient"):
            raise PermissionError(13, "Permission denied")
        return real_sha(path)

    monkeypatch.setattr(runner, "sha256_file", unreadable)
    files = [str(BULK / "Patient.000.ndjson"), str(BULK / "Device.000.ndjson")]
    args = ["ingest", *files, "--tenant", "acme", "--zone", str(tmp_path / "zone"), "--json"]
    env = {"DROPZONE_PIPELINE__VALIDATION_WORKERS": "0", "DROPZONE_STORE__KIND": "memory"}
    result = CliRunner().invoke(cli_module.main, args, env=env)
    assert result.exit_code == 1
    summary = json.loads(next(line for line in result.output.splitlines() if line.startswith('{"files"')))
    assert [f["name"] for f in summary["files"]] == ["Device.000.ndjson"]
    assert summary["unfinished"] == [{"key": "incoming/acme/Patient.000.ndjson", "code": "permission_denied"}]
    assert "stays in incoming/ for a retry" in result.output
    assert (tmp_path / "zone" / "incoming" / "acme" / "Patient.000.ndjson").is_file()
