"""``GET [base]/metadata``: the CapabilityStatement (FHIR R4), for both FHIR bases
(``/api/fhir`` for a tenant's own token, ``/api/tenants/{tenant}/fhir`` for readers too).

It is built from what this process serves: the search parameters from the same table the
search uses (``dropzone.search.query.supported_parameters``) and the operations from the
routes actually mounted, so it cannot claim more than is implemented. No token is needed
(FHIR clients read it before they authenticate); it holds nothing about any tenant.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dropzone import __version__
from dropzone.api.auth import TOKEN_PATH
from dropzone.api.fhir import FhirJSONResponse
from dropzone.search.query import supported_parameters
from dropzone.validation import model

router = APIRouter(tags=["fhir"])
_OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
_OPERATIONS = {
    "$everything": ("everything", "http://hl7.org/fhir/OperationDefinition/Patient-everything"),
    "$export": ("export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"),
}


@lru_cache(maxsize=1)
def _resources() -> tuple[dict[str, Any], ...]:
    out = []
    for rtype in sorted(model().resource_types):
        params = supported_parameters(rtype)
        out.append(
            {
                "type": rtype,
                "interaction": [{"code": c} for c in ("read", "vread", "update", "create", "search-type")],
                "versioning": "versioned",
                "readHistory": True,
                "updateCreate": True,
                "searchParam": [{"name": name, "type": kind} for name, kind in params.items()],
            }
        )
    return tuple(out)


def capability_statement(request: Request) -> dict[str, Any]:
    root = str(request.base_url).rstrip("/")
    # The OpenAPI paths are every mounted route (routers included), computed once per app.
    paths = set(request.app.openapi().get("paths", {}))
    resources = [dict(r) for r in _resources()]
    if any(p.endswith("/Patient/{pid}/$everything") for p in paths):
        for resource in resources:
            if resource["type"] == "Patient":
                name, url = _OPERATIONS["$everything"]
                resource["operation"] = [{"name": name, "definition": url}]
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": "Interactions that write (create, update) need a tenant's token; readers read only.",
        "security": {
            "service": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                            "code": "SMART-on-FHIR",
                        }
                    ]
                }
            ],
            "extension": [
                {"url": _OAUTH_URIS, "extension": [{"url": "token", "valueUri": root + TOKEN_PATH}]}
            ],
        },
        "resource": resources,
    }
    if any(p.endswith("/fhir/$export") for p in paths):
        name, url = _OPERATIONS["$export"]
        rest["operation"] = [{"name": name, "definition": url}]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-05",
        "kind": "instance",
        "software": {"name": "dropzone", "version": __version__},
        "implementation": {"description": "dropzone FHIR API", "url": root + "/api/fhir"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [rest],
    }


@router.get("/api/fhir/metadata", summary="CapabilityStatement (no token needed)")
def own_metadata(request: Request) -> JSONResponse:
    return FhirJSONResponse(capability_statement(request))


@router.get("/api/tenants/{tenant}/fhir/metadata", summary="CapabilityStatement (no token needed)")
def tenant_metadata(request: Request, tenant: str) -> JSONResponse:
    """The same statement for every tenant path: it says nothing about whether the tenant exists."""
    return FhirJSONResponse(capability_statement(request))
