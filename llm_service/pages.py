"""Pages the service serves itself: their files in llm_service/static (no CDN, works offline)."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files


@lru_cache(maxsize=8)
def static_text(name: str) -> str:
    """The text of one file of llm_service/static."""
    return files("llm_service").joinpath("static", name).read_text(encoding="utf-8")
