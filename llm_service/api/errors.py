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
# ("function-after[_valid(), DateRange]", "constrained-str", "DateRange"): not a field. In the
# body, a part that is a key (or index) of what the caller sent is a field whatever it looks
# like ("Period", a bounds code "Facebook"); only a part the body does not hold is a member.
_UNION_MEMBER = re.compile(
    r"^(function-(after|before|wrap|plain)|tagged-union|lax-or-strict|json-or-python|nullable"
    r"|chain|union)\[.*\]$|^constrained-[a-z]+$|^[A-Z][A-Za-z0-9]*$"
)
# "This member does not take that kind of value": noise beside the member that does.
_WRONG_KIND = {
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dict_type": "an object",
    "string_type": "a string",
    "int_type": "an integer",
    "date_type": "a date",
}
_PATTERN_HINTS = {
    "channel": "a channel code in lower case, e.g. facebook_paid or email",
}
# A field name or message is the caller's words at most this long (never a long input back).
_MAX_PART = 40
_MAX_MESSAGE = 300
_ABSENT = object()


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _field_parts(loc: tuple[Any, ...], body: Any) -> tuple[list[str], bool]:
    """The field's path as the caller wrote it, and whether a union member was left out."""
    kept: list[str] = []
    union = False
    node: Any = body if loc and loc[0] == "body" else _ABSENT
    for index, part in enumerate(loc):
        if index == 0:
            kept.append(str(part))
            continue
        in_dict = isinstance(node, dict) and isinstance(part, str) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif _UNION_MEMBER.match(str(part)):
            union = True
            continue
        else:
            node = _ABSENT
        kept.append(_short(str(part), _MAX_PART))
    return kept, union


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    found: list[tuple[str, str, str | None]] = []
    body = getattr(exc, "body", None)
    for err in exc.errors():
        # Never echo the offending input back: it may be huge or personal.
        loc, union = _field_parts(tuple(err.get("loc", ())), body)
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "string_pattern_mismatch" and loc and loc[-1] in _PATTERN_HINTS:
            message = f"must be {_PATTERN_HINTS[loc[-1]]}"
        kind = _WRONG_KIND.get(str(err.get("type"))) if union else None
        found.append((".".join(loc), _short(message, _MAX_MESSAGE), kind))

    # A union's members each report; the one that takes this kind of value says what is wrong
    # (at the field or inside it: a date range missing its end is not "not a string").
    def said(field: str) -> bool:
        return any(
            kind is None and (f == field or f.startswith(field + ".")) for f, _, kind in found
        )

    details: list[dict[str, Any]] = []
    kinds: dict[str, list[str]] = {}
    for field, message, kind in found:
        if kind is not None:
            if said(field):
                continue
            if field in kinds:  # every member refused its kind: one error saying what fits
                if kind not in kinds[field]:
                    kinds[field].append(kind)
                continue
            kinds[field] = [kind]
        entry = {"field": field, "message": message}
        if entry not in details:
            details.append(entry)
    for entry in details:
        wanted = kinds.get(entry["field"])
        if wanted and len(wanted) > 1:
            entry["message"] = "Input should be " + " or ".join(wanted)
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
