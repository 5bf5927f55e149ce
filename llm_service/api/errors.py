"""One JSON error shape for every error, {"error": {"code", "message"}}, never a stack trace."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from llm_service.db.retry import is_database_outage
from llm_service.errors import ServiceError

_log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


def error_body(
    code: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The JSON body of an error response."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    """A JSON error response."""
    return JSONResponse(error_body(code, message, **extra), status_code=status)


async def asgi_json_error(
    send: Send, status: int, code: str, message: str, *, close: bool = False
) -> None:
    """Send a JSON error response from ASGI middleware, before any route (`close`: end the
    connection too)."""
    body = json.dumps(error_body(code, message)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# The member of a union an error is about, as pydantic names it in `loc`
# ("function-after[_valid(), DateRange]", "constrained-str", "DateRange"): not a field.
_UNION_MEMBER = re.compile(
    r"^(function-(after|before|wrap|plain)|tagged-union|lax-or-strict|json-or-python|nullable"
    r"|chain|union)\[.*\]$|^constrained-[a-z]+$|^[A-Z][A-Za-z0-9]*$"
)
# "This member does not take that kind of value": noise beside the member that does.
_WRONG_KIND = frozenset(
    {"model_type", "model_attributes_type", "string_type", "dict_type", "int_type", "date_type"}
)
_PATTERN_HINTS = {
    "channel": "a channel code in lower case, e.g. facebook_paid or email",
}


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    found: list[tuple[str, str, bool]] = []
    for err in exc.errors():
        # Never echo the offending input back: it may be huge or personal.
        parts = [str(part) for part in err.get("loc", ())]
        loc = [p for p in parts if not _UNION_MEMBER.match(p)]
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "string_pattern_mismatch" and loc and loc[-1] in _PATTERN_HINTS:
            message = f"must be {_PATTERN_HINTS[loc[-1]]}"
        union = len(loc) < len(parts)
        found.append((".".join(loc), message, union and err.get("type") in _WRONG_KIND))
    # A union's members each report; the one that takes this kind of value says what is wrong.
    said = {field for field, _, wrong_kind in found if not wrong_kind}
    details: list[dict[str, Any]] = []
    for field, message, wrong_kind in found:
        entry = {"field": field, "message": message}
        if (wrong_kind and field in said) or entry in details:
            continue
        details.append(entry)
    return details


def install_error_handlers(app: FastAPI) -> None:
    """Route every error, expected or not, to the JSON error shape."""

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(
            422, "validation_error", "the request is not valid", details=_validation_details(exc)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(
            error_body(code, message), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_database_outage(exc):
            _log.warning("database unavailable", extra={"path": request.url.path})
            response = error_response(
                503, "unavailable", "the database is unavailable; retry shortly"
            )
            response.headers["Retry-After"] = "1"
            return response
        _log.exception("unhandled error", extra={"path": request.url.path})
        return error_response(500, "internal_error", "an internal error occurred")
