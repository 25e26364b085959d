"""``create_app``: the FastAPI application over one drop zone and one store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi

from dropzone import __version__
from dropzone.api import (
    auth,
    batch,
    bulk_export,
    capability,
    fhir,
    quality,
    search,
    smart_config,
    tenant_reads,
    ui,
    views,
)
from dropzone.api.context import ApiContext, get_context
from dropzone.api.credentials import CredentialRegistry
from dropzone.api.errors import install_error_handlers
from dropzone.api.guard import Guard
from dropzone.api.ratelimit import TokenLimits
from dropzone.api.schemas import Health
from dropzone.api.smart import AssertionVerifier
from dropzone.api.tokens import TokenIssuer, load_signing_key
from dropzone.config import Settings
from dropzone.sources.base import Source
from dropzone.store.base import Store

DESCRIPTION = """Push FHIR R4 and claims data into the drop zone.

1. `POST /api/authenticate` with your client id and secret (OAuth2 client credentials) for a
   short-lived bearer token scoped to your tenant.
2. `POST /api/batch?name=FILE` with the file as the request body (onboarding, any size up to the
   configured limit), then poll `GET /api/batch/{id}` for its outcome, counts and error report.
3. `PUT /api/fhir/{type}/{id}` (or `POST /api/fhir/{type}`) for single updates, validated at once.

Uploaded files take the same path as dropped files: same formats, validation, versioning and
error reports.
"""


def create_app(
    settings: Settings,
    store: Store,
    source: Source,
    *,
    workers: bool = False,
    env: Mapping[str, str] | None = None,
    issuer: TokenIssuer | None = None,
    token_limits: TokenLimits | None = None,
    body_read_timeout: float | None = None,
    body_min_rate: float | None = None,
) -> FastAPI:
    """The API over ``source`` and ``store``. Processing is not done here: files land in the
    zone's incoming/ and the watcher's workers (``dropzone api`` runs them in the same process
    unless ``--no-workers``; ``workers`` only feeds the health answer) take them from there.
    ``body_read_timeout``/``body_min_rate`` override ``api.body_read_timeout_seconds`` and
    ``api.body_min_bytes_per_second`` (tests); ``token_limits`` the ``api.token_*`` settings."""
    credentials = CredentialRegistry(settings, env)
    if issuer is None:
        key, _ephemeral = load_signing_key(settings.api, settings.config_dir)
        issuer = TokenIssuer(key, settings.api.token_ttl_seconds)
    app = FastAPI(
        title="dropzone push API",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.dropzone = ApiContext(
        settings=settings,
        store=store,
        source=source,
        credentials=credentials,
        issuer=issuer,
        assertions=AssertionVerifier(credentials),
        workers=workers,
        token_limits=token_limits
        or TokenLimits(
            client_failures=settings.api.token_failures_per_client,
            address_attempts=settings.api.token_attempts_per_address,
            window=settings.api.token_window_seconds,
        ),
    )
    install_error_handlers(app)
    app.add_middleware(
        Guard,
        resource_limit=settings.api.max_resource_bytes,
        body_read_timeout=body_read_timeout or settings.api.body_read_timeout_seconds,
        body_min_rate=settings.api.body_min_bytes_per_second if body_min_rate is None else body_min_rate,
    )
    app.include_router(auth.router)
    # Before fhir: /api/fhir/.well-known/smart-configuration is not a {type}/{id}.
    app.include_router(smart_config.router)
    app.include_router(batch.router)
    app.include_router(fhir.router)
    app.include_router(views.router)
    app.include_router(capability.router)
    app.include_router(bulk_export.router)  # before search: $export is not a {type}
    app.include_router(quality.router)
    app.include_router(tenant_reads.router)  # after bulk_export: $export-status/{job} is no {type}/{id}
    # Last: /api/tenants/{tenant}/fhir/{type} would otherwise shadow fixed paths such as $export.
    app.include_router(search.router)
    app.include_router(ui.router)  # the operations dashboard, /ui (HTML, not in the OpenAPI document)

    @app.get("/api/health", response_model=Health, tags=["service"], summary="Liveness (no token needed)")
    def health(request: Request) -> Health:
        ctx = get_context(request)
        return Health(store=ctx.store.description, workers=ctx.workers)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(fhir.OPENAPI_SCHEMAS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
