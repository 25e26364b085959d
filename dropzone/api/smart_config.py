"""``GET /.well-known/smart-configuration`` (SMART App Launch 2.x, "Conformance"): how a backend
client gets a token here. No token is needed and nothing in it is about a tenant.

Only what is implemented is claimed: the client-credentials grant at ``POST /api/authenticate``
with a client secret (HTTP Basic or form) or a SMART Backend Services client assertion
(``smart.py``: the algorithms it accepts). SMART puts the document under each FHIR base too, so
``/api/fhir/.well-known/...`` and ``/api/tenants/{tenant}/fhir/.well-known/...`` answer the same.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dropzone.api.auth import TOKEN_PATH
from dropzone.api.context import get_context
from dropzone.api.smart import ALGORITHMS
from dropzone.api.tokens import READ_SCOPE, SCOPE

router = APIRouter(tags=["authentication"])
WELL_KNOWN = "/.well-known/smart-configuration"


def token_endpoint(request: Request) -> str:
    """The configured public address (behind a proxy the request's own may be internal), else
    the address this request reached."""
    public = get_context(request).settings.api.public_url
    root = public.rstrip("/") if public else str(request.base_url).rstrip("/")
    return root + TOKEN_PATH


def smart_configuration(request: Request) -> dict[str, Any]:
    return {
        "token_endpoint": token_endpoint(request),
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ],
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        # Tenants' tokens carry both; readers' only system/*.read.
        "scopes_supported": sorted({*SCOPE.split(), READ_SCOPE}),
        "capabilities": ["client-confidential-asymmetric", "client-confidential-symmetric"],
    }


@router.get(WELL_KNOWN, summary="SMART configuration (no token needed)")
def well_known(request: Request) -> JSONResponse:
    return JSONResponse(smart_configuration(request))


@router.get("/api/fhir" + WELL_KNOWN, summary="SMART configuration at the FHIR base (no token needed)")
def own_base_well_known(request: Request) -> JSONResponse:
    return JSONResponse(smart_configuration(request))


@router.get("/api/tenants/{tenant}/fhir" + WELL_KNOWN, summary="SMART configuration (no token needed)")
def tenant_base_well_known(request: Request, tenant: str) -> JSONResponse:
    """The same document for every tenant path: it says nothing about whether the tenant exists."""
    return JSONResponse(smart_configuration(request))
