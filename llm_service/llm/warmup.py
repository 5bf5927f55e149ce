"""Warm-up at start-up: what the first request would otherwise pay for, paid before serving.

litellm's import and pinned price map (`load_litellm`, ~2.5 s), and the tokenizer encodings of
the configured models (tiktoken reads its BPE files on first use: ~0.5 s inside a request).
Called by each process's start (the app lifespan, `llm-service worker`), not by the gateway
factory; the local embedding model is loaded by the explanation service's start, also there.
"""

from __future__ import annotations

from llm_service.llm.litellm_setup import load_litellm
from llm_service.settings import Settings

_SAMPLE = [{"role": "user", "content": "warm-up"}]


def warm_up(settings: Settings) -> None:
    """Import litellm and load the encodings every configured model counts tokens with."""
    litellm = load_litellm()
    for model in (settings.llm_model, settings.embedding_model):
        if model and model != "local":
            litellm.token_counter(model=model, messages=_SAMPLE)
            litellm.token_counter(model=model, text="warm-up")
