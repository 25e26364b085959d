"""What every route needs, held on ``app.state.dropzone``."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from dropzone.api.credentials import CredentialRegistry
from dropzone.api.ratelimit import TokenLimits
from dropzone.api.smart import AssertionVerifier
from dropzone.api.tokens import TokenIssuer
from dropzone.config import Settings
from dropzone.sources.base import Source
from dropzone.store.base import Store


@dataclass(slots=True)
class ApiContext:
    settings: Settings
    store: Store
    source: Source
    credentials: CredentialRegistry
    issuer: TokenIssuer
    assertions: AssertionVerifier
    workers: bool = False
    token_limits: TokenLimits = field(default_factory=TokenLimits)


def get_context(request: Request) -> ApiContext:
    return request.app.state.dropzone  # type: ignore[no-any-return]
