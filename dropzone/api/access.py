"""Who may read which tenant: the dependency every ``/api/tenants/{tenant}/...`` route uses.

A tenant's token reads and writes only its own tenant. A reader's token (``dropzone reader
add``) reads the tenants it was given and never writes. A tenant the caller may not read answers
404, exactly like a tenant that does not exist, so existence does not leak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request

from dropzone.api.auth import current_credential
from dropzone.api.credentials import ClientCredential, Credential
from dropzone.api.errors import ApiError


@dataclass(frozen=True, slots=True)
class Access:
    """The caller behind a valid bearer token. ``tenants`` None means every tenant."""

    kind: str  # "tenant" or "reader"
    name: str
    tenants: frozenset[str] | None
    can_write: bool

    def may_read(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


def current_access(request: Request, cred: Annotated[Credential, Depends(current_credential)]) -> Access:
    """Who the bearer token is (401 without a valid one). A reader's tenants are those of its
    file now, not when the token was issued: narrowing the list takes effect at once."""
    if isinstance(cred, ClientCredential):
        return Access(kind="tenant", name=cred.tenant, tenants=frozenset({cred.tenant}), can_write=True)
    return Access(kind="reader", name=cred.reader, tenants=cred.tenants, can_write=False)


def readable_tenant(
    tenant: Annotated[str, Path(max_length=64, description="the tenant whose data is read")],
    access: Annotated[Access, Depends(current_access)],
) -> str:
    if not access.may_read(tenant):
        raise ApiError(404, "not_found", "no such tenant")
    return tenant


ReadTenant = Annotated[str, Depends(readable_tenant)]
CurrentAccess = Annotated[Access, Depends(current_access)]
