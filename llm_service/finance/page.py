"""The finance page: a static HTML shell and its script, served by the service (no CDN)."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from typing import Final

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


@lru_cache(maxsize=4)
def static_text(name: str) -> str:
    """The text of one file of llm_service/static."""
    return files("llm_service").joinpath("static", name).read_text(encoding="utf-8")
