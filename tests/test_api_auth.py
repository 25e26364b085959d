"""Tokens: issue, expiry, refusal, rotation, secrets from env/file, SMART client assertions,
and that no secret reaches a log line."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from api_support import SIGNING_KEY, Harness, build, captured_logs, in_process, live_server, make_settings
from click.testing import CliRunner

from dropzone.api.app import create_app
from dropzone.api.credentials import CredentialRegistry
from dropzone.api.tenant_files import rotate_secret
from dropzone.api.tokens import TokenIssuer
from dropzone.cli import main
from dropzone.config import load_settings
from dropzone.errors import ConfigError

PROTECTED = "/api/fhir/Patient/x"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Harness]:
    with live_server(build(tmp_path), workers=False) as h:
        yield h


def form(cred, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": cred.client_id,
        "client_secret": cred.client_secret,
        **extra,
    }


def test_token_over_real_http_is_short_lived_signed_and_scoped(tmp_path: Path) -> None:
    with live_server(build(tmp_path, token_ttl_seconds=120), workers=False) as h:
        r = h.client.post("/api/authenticate", data=form(h.creds["acme"]))
        assert r.status_code == 200
        body = r.json()
        assert body["token_type"] == "bearer" and body["expires_in"] == 120
        assert r.headers["cache-control"] == "no-store"
        claims = jwt.decode(body["access_token"], SIGNING_KEY, algorithms=["HS256"], audience="dropzone-api")
        assert claims["tenant"] == "acme" and claims["exp"] - claims["iat"] == 120
        ok = h.client.get(PROTECTED, headers={"Authorization": f"Bearer {body['access_token']}"})
        assert ok.status_code == 404  # authorised; simply nothing stored yet
        assert h.client.get(PROTECTED).status_code == 401


def test_http_basic_client_authentication(api: Harness) -> None:
    cred = api.creds["beta"]
    basic = base64.b64encode(f"{cred.client_id}:{cred.client_secret}".encode()).decode()
    r = api.client.post(
        "/api/authenticate",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert r.status_code == 200
    assert jwt.decode(r.json()["access_token"], options={"verify_signature": False})["tenant"] == "beta"


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        (
            {"grant_type": "client_credentials", "client_id": "acme", "client_secret": "nope"},
            401,
            "invalid_client",
        ),
        ({"grant_type": "password", "client_id": "x", "client_secret": "y"}, 400, "unsupported_grant_type"),
        ({"client_id": "x", "client_secret": "y"}, 400, "invalid_request"),
        ({"grant_type": "client_credentials"}, 400, "invalid_request"),
    ],
)
def test_token_refusals(api: Harness, data: dict, status: int, error: str) -> None:
    r = api.client.post("/api/authenticate", data=data)
    assert r.status_code == status
    assert r.json()["error"] == error


def test_wrong_secret_for_a_real_client_is_refused(api: Harness) -> None:
    cred = api.creds["acme"]
    r = api.client.post(
        "/api/authenticate", data={**form(cred), "client_secret": api.creds["beta"].client_secret}
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert "Basic" in r.headers["www-authenticate"]


def test_bearer_refusals_missing_malformed_forged_expired(api: Harness) -> None:
    missing = api.client.get(PROTECTED)
    assert missing.status_code == 401 and "Bearer" in missing.headers["www-authenticate"]
    assert api.client.get(PROTECTED, headers={"Authorization": "Basic abc"}).status_code == 401
    assert api.client.get(PROTECTED, headers={"Authorization": "Bearer not.a.jwt"}).status_code == 401
    now = int(time.time())
    claims = {"iss": "dropzone", "aud": "dropzone-api", "sub": api.creds["acme"].client_id, "tenant": "acme"}
    forged = jwt.encode(
        {**claims, "iat": now, "exp": now + 60, "cfp": "x"}, "another-key-" * 4, algorithm="HS256"
    )
    assert api.client.get(PROTECTED, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    cfp = CredentialRegistry(api.settings).for_tenant("acme").fingerprint
    expired = jwt.encode(
        {**claims, "iat": now - 120, "exp": now - 1, "cfp": cfp}, SIGNING_KEY, algorithm="HS256"
    )
    r = api.client.get(PROTECTED, headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and "expired" in r.text
    # The same claims, still valid, are accepted: the refusal above was the expiry.
    fresh = jwt.encode({**claims, "iat": now, "exp": now + 60, "cfp": cfp}, SIGNING_KEY, algorithm="HS256")
    assert api.client.get(PROTECTED, headers={"Authorization": f"Bearer {fresh}"}).status_code == 404
    # A token naming another tenant than its client (edited claims) fails the signature.
    header, payload, sig = fresh.split(".")
    swapped = (
        base64.urlsafe_b64encode(base64.urlsafe_b64decode(payload + "==").replace(b'"acme"', b'"beta"'))
        .decode()
        .rstrip("=")
    )
    assert (
        api.client.get(PROTECTED, headers={"Authorization": f"Bearer {header}.{swapped}.{sig}"}).status_code
        == 401
    )


def test_token_expires_with_the_clock(tmp_path: Path) -> None:
    now = [1_000_000.0]
    issuer = TokenIssuer(SIGNING_KEY.encode(), 60, clock=lambda: now[0])
    with live_server(build(tmp_path, token_ttl_seconds=60), workers=False, issuer=issuer) as h:
        token = h.client.post("/api/authenticate", data=form(h.creds["acme"])).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        now[0] += 59
        assert h.client.get(PROTECTED, headers=headers).status_code == 404
        now[0] += 2
        r = h.client.get(PROTECTED, headers=headers)
        assert r.status_code == 401 and "expired" in r.json()["issue"][0]["diagnostics"]


def test_rotation_revokes_old_secret_and_its_tokens(api: Harness) -> None:
    old_token = api.token("acme")
    rotated = rotate_secret(api.settings.config_dir, "acme")
    time.sleep(1.05)  # the registry re-reads changed tenant files at most once a second
    assert api.client.get(PROTECTED, headers={"Authorization": f"Bearer {old_token}"}).status_code == 401
    assert api.client.post("/api/authenticate", data=form(api.creds["acme"])).status_code == 401
    r = api.client.post("/api/authenticate", data=form(rotated))
    assert r.status_code == 200
    assert rotated.client_id == api.creds["acme"].client_id
    text = (api.settings.config_dir / "tenants" / "acme.yaml").read_text()
    assert rotated.client_secret not in text and "# Tenant acme" in text  # comments kept


def test_cli_tenant_add_and_rotate(tmp_path: Path) -> None:
    runner = CliRunner()
    config = tmp_path / "cfg"
    r = runner.invoke(main, ["--config", str(config), "tenant", "add", "gamma", "--json"])
    assert r.exit_code == 0, r.output
    import orjson

    issued = orjson.loads(r.stdout)
    assert issued["tenant"] == "gamma" and issued["client_id"].startswith("gamma.")
    text = (config / "tenants" / "gamma.yaml").read_text()
    assert issued["client_secret"] not in text and "client_secret_hash: scrypt$" in text
    again = runner.invoke(main, ["--config", str(config), "tenant", "add", "gamma"])
    assert again.exit_code == 2 and "rotate" in again.output
    rot = runner.invoke(main, ["--config", str(config), "tenant", "rotate", "gamma", "--json"])
    assert rot.exit_code == 0
    rotated = orjson.loads(rot.stdout)
    assert rotated["client_id"] == issued["client_id"] and rotated["client_secret"] != issued["client_secret"]
    registry = CredentialRegistry(load_settings(config, env={}))
    assert registry.authenticate(issued["client_id"], rotated["client_secret"]) is not None
    assert registry.authenticate(issued["client_id"], issued["client_secret"]) is None
    bad = runner.invoke(main, ["--config", str(config), "tenant", "add", "Not Valid"])
    assert bad.exit_code == 2


def _tenant_yaml(config: Path, name: str, api_block: str) -> None:
    (config / "tenants").mkdir(parents=True, exist_ok=True)
    (config / "tenants" / f"{name}.yaml").write_text(f"name: {name}\napi:\n{api_block}")


def test_secret_by_env_or_file_and_never_inline(tmp_path: Path) -> None:
    config = tmp_path / "config"
    secret_file = tmp_path / "delta.secret"
    secret_file.write_text("file-secret-0123456789abcdef\n")
    _tenant_yaml(config, "delta", f"  client_id: delta-client\n  client_secret_file: {secret_file}\n")
    _tenant_yaml(config, "omega", "  client_id: omega-client\n  client_secret_env: OMEGA_SECRET\n")
    env = {"OMEGA_SECRET": "env-secret-0123456789abcdef"}
    registry = CredentialRegistry(load_settings(config, env={}), env=env)
    assert registry.authenticate("delta-client", "file-secret-0123456789abcdef").tenant == "delta"
    assert registry.authenticate("omega-client", "env-secret-0123456789abcdef").tenant == "omega"
    assert registry.authenticate("omega-client", "env-secret-0123456789abcdeX") is None
    with pytest.raises(ConfigError, match="OMEGA_SECRET is not set"):
        CredentialRegistry(load_settings(config, env={}), env={})
    _tenant_yaml(config, "omega", "  client_id: omega-client\n  client_secret: plaintext-here-123456\n")
    with pytest.raises(ConfigError, match="plaintext") as info:
        CredentialRegistry(load_settings(config, env={}), env=env)
    assert "plaintext-here" not in str(info.value)


def test_short_signing_key_is_a_config_error(tmp_path: Path) -> None:
    h = build(tmp_path)
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        create_app(make_settings(tmp_path, signing_key="short"), h.store, h.source)


def test_secrets_and_tokens_never_reach_the_logs(tmp_path: Path) -> None:
    with captured_logs() as logs, live_server(build(tmp_path), workers=False) as h:
        cred = h.creds["acme"]
        token = h.token("acme")
        h.client.post("/api/authenticate", data={**form(cred), "client_secret": "wrong-guess-secret"})
        h.client.post("/api/authenticate", data={**form(cred), "client_id": cred.client_secret})
        h.client.get(PROTECTED, headers={"Authorization": f"Bearer {token}x"})
        h.client.get(PROTECTED, headers=h.auth("acme"))
    assert "api.token_issued" in logs.text and "api.token_refused" in logs.text and "api.request" in logs.text
    for secret in (cred.client_secret, token, "wrong-guess-secret", SIGNING_KEY):
        assert secret not in logs.text


# -- SMART Backend Services ------------------------------------------------------------------------


@pytest.fixture
def smart(tmp_path: Path) -> Iterator[tuple[Harness, object]]:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    public.update(kid="k1", alg="RS384")
    config = tmp_path / "config"
    import yaml

    _tenant_yaml(
        config,
        "sigma",
        "  client_id: sigma-backend\n  jwks: " + yaml.safe_dump({"keys": [public]}, default_flow_style=True),
    )
    h = build(tmp_path, tenants=("acme",), public_url="https://dz.example.org")
    with in_process(h):
        yield h, key


def assertion(key: object, aud: str, lifetime: int = 240, **over: object) -> str:
    now = int(time.time())
    claims = {
        "iss": "sigma-backend",
        "sub": "sigma-backend",
        "aud": aud,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    claims.update(over)
    return jwt.encode(claims, key, algorithm="RS384", headers={"kid": "k1"})


def smart_form(signed: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": signed,
        "scope": "system/*.write",
    }


def test_smart_backend_services_assertion(smart: tuple[Harness, object]) -> None:
    h, key = smart
    aud = "https://dz.example.org/api/authenticate"
    signed = assertion(key, aud)
    r = h.client.post("/api/authenticate", data=smart_form(signed))
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["tenant"] == "sigma"
    assert h.client.get(PROTECTED, headers={"Authorization": f"Bearer {token}"}).status_code == 404
    replay = h.client.post("/api/authenticate", data=smart_form(signed))
    assert replay.status_code == 401 and "already used" in replay.json()["error_description"]
    wrong_aud = h.client.post("/api/authenticate", data=smart_form(assertion(key, "https://elsewhere/token")))
    assert wrong_aud.status_code == 401
    too_long = h.client.post("/api/authenticate", data=smart_form(assertion(key, aud, lifetime=3600)))
    assert too_long.status_code == 401 and "five minutes" in too_long.json()["error_description"]
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = h.client.post("/api/authenticate", data=smart_form(assertion(stranger, aud)))
    assert forged.status_code == 401
