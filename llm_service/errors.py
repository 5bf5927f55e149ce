"""Errors the service raises on purpose; each maps to one HTTP status and a stable code."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every deliberate error: a status, a machine-readable code and a message."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class Unauthorized(ServiceError):
    """Missing, malformed or unknown credentials."""

    status = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    """Valid credentials that may not use this route."""

    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    """No such resource for this tenant (another tenant's resource is also 'not found')."""

    status = 404
    code = "not_found"


class Conflict(ServiceError):
    """The request conflicts with the current state."""

    status = 409
    code = "conflict"


class PayloadTooLarge(ServiceError):
    """The request body is larger than the service accepts."""

    status = 413
    code = "payload_too_large"


class InvalidRequest(ServiceError):
    """Well-formed but unacceptable input."""

    status = 422
    code = "validation_error"


class BudgetExceeded(ServiceError):
    """The tenant's monthly cap or a run's ceiling leaves no room."""

    status = 429
    code = "budget_exceeded"


class Unavailable(ServiceError):
    """A dependency (database, provider) is not available right now."""

    status = 503
    code = "unavailable"
