"""The OpenAPI document, and a schemathesis run against the live server: no server errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from api_support import Harness, build, live_server
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with live_server(build(tmp_path_factory.mktemp("openapi"), max_resource_bytes=64 * 1024)) as h:
        yield h


def test_openapi_document_is_served(live: Harness) -> None:
    r = live.client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    paths = doc["paths"]
    for path in (
        "/api/authenticate",
        "/api/batch",
        "/api/batch/{upload_id}",
        "/api/fhir/{rtype}/{rid}",
        "/api/fhir/{rtype}",
    ):
        assert path in paths
    flow = doc["components"]["securitySchemes"]["client_credentials"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "/api/authenticate"
    assert "application/octet-stream" in paths["/api/batch"]["post"]["requestBody"]["content"]
    assert live.client.get("/docs").status_code == 200


def test_schemathesis_finds_no_server_errors(live: Harness) -> None:
    """Every operation, with generated valid and invalid inputs, and a valid token. (Driven by
    hand: schemathesis' pytest plugin does not run under pytest 9 yet.)"""
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    auth = live.auth("acme")["Authorization"]
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case: schemathesis.Case) -> None:
                nonlocal calls
                headers = {**(case.headers or {}), "Authorization": auth}
                response = case.call(headers=headers)
                calls += 1
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}")

            try:
                check()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # e.g. no parameters to get wrong
    assert calls >= 100
    assert failures == []
