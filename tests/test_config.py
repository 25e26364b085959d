"""Settings: YAML files, tenant files, environment overrides, clear errors, no secret in output."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropzone.config import load_settings
from dropzone.errors import ConfigError
from processors.base import Sniffed
from processors.registry import all_processors, choose


def _config(tmp_path: Path, main: str = "", **tenants: str) -> Path:
    folder = tmp_path / "config"
    (folder / "tenants").mkdir(parents=True)
    (folder / "dropzone.yaml").write_text(main)
    for name, text in tenants.items():
        (folder / "tenants" / f"{name}.yaml").write_text(text)
    return folder


def test_defaults_accept_any_tenant_and_use_the_embedded_store() -> None:
    settings = load_settings(config_dir=None, env={})
    assert settings.zone == "./dropzone-data"
    assert settings.store.mongodb_uri is None
    assert settings.tenant("new-clinic") is not None
    assert settings.tenant("Not A Tenant") is None


def test_yaml_then_environment_then_explicit_overrides(tmp_path: Path) -> None:
    folder = _config(
        tmp_path,
        "zone: /srv/zone\npipeline:\n  batch_size: 100\n  policy: file\n",
        acme="display_name: Acme Health\npolicy: record\n",
    )
    env = {"DROPZONE_PIPELINE__BATCH_SIZE": "250", "MONGODB_URI": "mongodb://user:s3cret@db:27017"}
    settings = load_settings(folder, env=env, zone="/other")
    assert settings.zone == "/other"
    assert settings.pipeline.batch_size == 250
    assert settings.policy_for("acme") == "record" and settings.policy_for("beta") == "file"
    assert settings.tenants["acme"].display_name == "Acme Health"
    assert settings.store.mongodb_uri.get_secret_value() == "mongodb://user:s3cret@db:27017"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.redacted())


def test_dropzone_config_variable_selects_the_folder(tmp_path: Path) -> None:
    folder = _config(tmp_path, "allow_undeclared_tenants: false\n", acme="{}\n")
    settings = load_settings(None, env={"DROPZONE_CONFIG": str(folder)})
    assert settings.tenant("acme") is not None and settings.tenant("other") is None


@pytest.mark.parametrize(
    ("main", "tenants", "message"),
    [
        ("pipeline:\n  lease_seconds: -1\n", {}, "pipeline.lease_seconds"),
        ("pipeline: [1, 2]\n", {}, "pipeline"),
        ("zone: [\n", {}, "not valid YAML"),
        ("", {"acme": "name: other\n"}, "must match the file name"),
        ("", {"Bad_Name": "{}\n"}, "tenant names"),
        ("logging:\n  format: xml\n", {}, "logging.format"),
    ],
)
def test_mistakes_are_reported_clearly(tmp_path: Path, main: str, tenants: dict, message: str) -> None:
    folder = _config(tmp_path, main, **tenants)
    with pytest.raises(ConfigError) as err:
        load_settings(folder, env={})
    assert message in str(err.value)


def test_missing_config_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope", env={})


def test_shipped_config_is_valid() -> None:
    repo_config = Path(__file__).resolve().parents[1] / "config"
    settings = load_settings(repo_config, env={})
    assert settings.allow_undeclared_tenants is True


def test_processors_are_plugins_chosen_by_content() -> None:
    names = set(all_processors())
    assert {"fhir-ndjson", "fhir-resource", "fhir-bundle"} <= names
    tenant = load_settings(None, env={}).tenant("acme")
    assert choose(Sniffed("ndjson", False, b"{}"), tenant).name == "fhir-ndjson"
    assert choose(Sniffed("json-bundle", False, b"{}"), tenant).name == "fhir-bundle"
    assert choose(Sniffed("weird", False, b""), tenant) is None
