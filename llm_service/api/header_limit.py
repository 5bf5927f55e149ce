"""Reject requests whose head is larger than the configured limit with 431, before any route.

httptools (uvicorn[standard]) reads a head of any size; h11 refused heads over 16 KiB. This
bounds what a route, the auth included, is ever given (a 4 MiB Authorization header is not
hashed and looked up like a key).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from llm_service.api.errors import asgi_json_error


class HeaderSizeLimit:
    """ASGI middleware: 431 when the request line's target plus its headers exceed `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
            for name, value in scope.get("headers", []):
                size += len(name) + len(value) + 4  # ": " and CRLF, as on the wire
            if size > self.max_bytes:
                await self._reject(send)
                return
        await self.app(scope, receive, send)

    async def _reject(self, send: Send) -> None:
        message = f"request headers are limited to {self.max_bytes} bytes"
        await asgi_json_error(send, 431, "headers_too_large", message, close=True)
