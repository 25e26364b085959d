"""Response bodies, as the OpenAPI document shows them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

BatchState = Literal["received", "processing", "archived", "partial", "quarantined", "duplicate"]


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds until the token expires")
    scope: str


class OAuthError(BaseModel):
    """RFC 6749 section 5.2."""

    error: Literal["invalid_request", "invalid_client", "unsupported_grant_type", "invalid_scope"]
    error_description: str | None = None


class OutcomeCoding(BaseModel):
    system: str
    code: str = Field(description="dropzone's machine code (too_large, unauthorized, not_found, ...)")


class OutcomeDetails(BaseModel):
    text: str = Field(description="the machine code again, for clients that read only text")
    coding: list[OutcomeCoding]


class OutcomeIssue(BaseModel):
    severity: Literal["error"]
    code: str = Field(description="FHIR IssueType (invalid, login, forbidden, not-found, ...)")
    details: OutcomeDetails
    diagnostics: str = Field(description="for people; never quotes request values")
    expression: list[str] | None = None


class ErrorBody(BaseModel):
    """Every API error but the token endpoint's (RFC 6749 there): a FHIR OperationOutcome, the
    machine code in ``issue[0].details.coding[0].code``."""

    resourceType: Literal["OperationOutcome"]
    issue: list[OutcomeIssue]


class BatchAccepted(BaseModel):
    id: str = Field(description="upload id; poll status_url for the outcome")
    status_url: str
    name: str
    size: int
    sha256: str


class RecordCounts(BaseModel):
    read: int = 0
    loaded: int = 0
    unchanged: int = 0
    rejected: int = 0


class FileError(BaseModel):
    code: str
    message: str


class BatchStatus(BaseModel):
    id: str
    name: str
    state: BatchState
    records: RecordCounts
    report: dict[str, Any] | None = Field(
        default=None, description="the file's error report (see README, 'Error reports') when one was written"
    )
    error: FileError | None = None
    received_at: str
    finished_at: str | None = None
    quality: dict[str, Any] | None = Field(
        default=None,
        description="the quality profile of the file's accepted records (README, 'Data-quality profile')",
    )


class BatchItem(BatchStatus):
    """One file of ``GET /api/batch``: a ``BatchStatus`` without the report body (fetch the
    status URL, or the SFTP reports/ folder, for that)."""

    via: Literal["api", "drop"] = Field(
        description="api: pushed with POST /api/batch, id is the upload id; "
        "drop: dropped by SFTP, S3 or into the folder, id is the file's ledger id"
    )
    status_url: str | None = Field(default=None, description="this upload's GET /api/batch/{id} (api only)")
    has_report: bool = Field(default=False, description="an error report was written for this file")


class BatchList(BaseModel):
    items: list[BatchItem] = Field(description="newest first")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    store: str
    workers: bool
