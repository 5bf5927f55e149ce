"""Per-request context (request id) and HTTP latency metrics, as plain ASGI middleware."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llm_service.logging_setup import REQUEST_ID, TENANT_ID
from llm_service.metrics import HTTP_LATENCY

_log = logging.getLogger("llm_service.http")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContext:
    """Give each request an id (X-Request-ID if sane), echo it, and time it by route template.

    The log line per request is sampled: every error (status >= 400) and every request slower
    than `slow_ms` is logged; of the others, one in `log_every` (the first, then every n-th;
    1 = all, 0 = none). Its cost is nothing for requests not logged, and nothing at all when
    the logger is off. The latency histogram counts every request.
    """

    def __init__(self, app: ASGIApp, *, log_every: int = 1, slow_ms: float = 1000.0) -> None:
        self.app = app
        self.log_every = log_every
        self.slow_s = slow_ms / 1000.0
        self._seen = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        request_token = REQUEST_ID.set(request_id)
        tenant_token = TENANT_ID.set(None)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            HTTP_LATENCY.labels(scope["method"], template, str(status)).observe(elapsed)
            if self._should_log(status, elapsed):
                # The route template, never the raw path or query (they may carry data).
                _log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            REQUEST_ID.reset(request_token)
            TENANT_ID.reset(tenant_token)

    def _should_log(self, status: int, elapsed: float) -> bool:
        """Whether this request gets a log line (see the class doc)."""
        if not _log.isEnabledFor(logging.INFO):
            return False
        if status >= 400 or elapsed >= self.slow_s:
            return True
        if self.log_every <= 0:
            return False
        self._seen += 1
        return self.log_every == 1 or self._seen % self.log_every == 1
