"""The finance page: a static HTML shell and its script, served by the service (no CDN)."""

from __future__ import annotations

from typing import Final

from llm_service.pages import static_text

__all__ = ["PAGE_HEADERS", "static_text"]

# Everything the page loads comes from the service itself; the data needs the finance token.
PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
