"""The process's price book: litellm's bundled map pinned at start-up, plus configured overrides."""

from __future__ import annotations

from typing import Any

from budgets.prices import ModelPrice, PriceBook
from llm_service.llm.gateway import LlmGateway
from llm_service.llm.litellm_setup import load_litellm
from llm_service.settings import Settings


def build_price_book(settings: Settings) -> PriceBook:
    """Prices frozen for the life of the process; refuses the configured model if it is unpriced."""
    litellm = load_litellm()
    book = PriceBook(model_cost=litellm.model_cost, overrides=dict(settings.llm_price_overrides))
    models = [m for m in (settings.llm_model, _embedding_model(settings)) if m]
    if models:
        book.require(models)
    return book


def _embedding_model(settings: Settings) -> str | None:
    return None if settings.embedding_model == "local" else settings.embedding_model


def price_of(book: PriceBook, model: str) -> ModelPrice:
    """The price of `model` (raises UnpricedModelError)."""
    return book.price_for(model)


def gateway_from_settings(settings: Settings, pool: Any) -> LlmGateway | None:
    """The gateway for the configured model, or None in degraded mode (no LLM_MODEL)."""
    if not settings.llm_model:
        return None
    # The tokenizers are loaded by `warm_up`, which each process's start calls (app lifespan,
    # worker) before it serves or claims anything.
    return LlmGateway(settings, pool, build_price_book(settings))
