"""The analyst's workbench (/investigations): a static page, its script and its style sheet.

Stricter than /finance: no inline style either, and Trusted Types are required with no policy,
so any attempt to assign HTML from a string (innerHTML and friends) throws in the browser:
everything the page shows from the model or the data can only be text.
"""

from __future__ import annotations

from typing import Final

from llm_service.pages import static_text

__all__ = ["ASSETS", "PAGE_HEADERS", "static_text"]

PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'; "
        "require-trusted-types-for 'script'; trusted-types 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

#: The page's files and their media types.
ASSETS: Final = {
    "workbench.html": "text/html; charset=utf-8",
    "workbench.js": "text/javascript; charset=utf-8",
    "workbench-evidence.js": "text/javascript; charset=utf-8",
    "workbench.css": "text/css; charset=utf-8",
}
