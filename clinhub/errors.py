"""One exception hierarchy for the whole hub; API, CLI and MLLP translate it in one place each."""

from __future__ import annotations


class ClinhubError(Exception):
    """Base of every error clinhub raises on purpose. `message` is safe to show to the user."""

    #: HTTP status the API answers with; the CLI and MLLP layers use `code` instead.
    http_status = 500
    #: A short, stable machine-readable code (also the FHIR OperationOutcome issue code).
    code = "exception"

    def __init__(self, message: str, *, detail: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}


class InvalidInput(ClinhubError):
    """The caller sent something malformed or out of range."""

    http_status = 400
    code = "invalid"


class InvalidMessage(InvalidInput):
    """An HL7 v2 message that cannot be parsed or accepted (answered with AE/AR)."""

    code = "structure"


class InvalidResource(InvalidInput):
    """A FHIR resource that does not conform (answered with 400/422 and an OperationOutcome)."""

    http_status = 422
    code = "structure"


class ViewError(InvalidInput):
    """A ViewDefinition that is invalid or cannot be compiled."""

    http_status = 422
    code = "invalid"


class Unauthenticated(ClinhubError):
    http_status = 401
    code = "login"


class PermissionDenied(ClinhubError):
    http_status = 403
    code = "forbidden"


class NotFound(ClinhubError):
    http_status = 404
    code = "not-found"


class Conflict(ClinhubError):
    """The request conflicts with the current state (duplicate, version mismatch)."""

    http_status = 409
    code = "conflict"


class RateLimited(ClinhubError):
    """Too many attempts; `retry_after` says how many seconds to wait."""

    http_status = 429
    code = "throttled"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotSupported(ClinhubError):
    """A feature that is not built yet; the product says so rather than pretending."""

    http_status = 501
    code = "not-supported"


class StoreUnavailable(ClinhubError):
    """The store cannot be reached or its schema is not at the current migration."""

    http_status = 503
    code = "transient"


class ConfigError(ClinhubError):
    """The configuration is invalid (bad URL, missing secret)."""

    http_status = 500
    code = "exception"


__all__ = [
    "ClinhubError",
    "ConfigError",
    "Conflict",
    "InvalidInput",
    "InvalidMessage",
    "InvalidResource",
    "NotFound",
    "NotSupported",
    "PermissionDenied",
    "RateLimited",
    "StoreUnavailable",
    "Unauthenticated",
    "ViewError",
]
