"""OpenAI's chat and embeddings endpoints in their wire format, for respx side effects.

Only the provider's answers are written here: the gateway, litellm and the ledger run for real.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from llm_service.llm import retry

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
EMBEDDINGS_URL = "https://api.openai.com/v1/embeddings"
EMBEDDING_MODEL = "openai/text-embedding-3-small"


def chat_completion(
    content: str,
    *,
    model: str = "gpt-4o-mini-2024-07-18",
    created: int = 1_764_000_000,
    prompt_tokens: int = 400,
    completion_tokens: int = 80,
) -> dict[str, Any]:
    """A chat completion as OpenAI sends it, answering `content`."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def explanation_content(summary: str, *, figure: str = "-1.00", detail: str = "drop") -> str:
    """A valid explanation (one facebook_paid driver) as the model's JSON answer."""
    return json.dumps(
        {
            "summary": summary,
            "drivers": [{"label": "facebook_paid", "figure": figure, "detail": detail}],
            "confidence": "high",
            "citations": [],
        }
    )


def embeddings_reply(
    request: httpx.Request, vector_of: Callable[[str], list[float]]
) -> httpx.Response:
    """OpenAI's embeddings endpoint: `vector_of(text)` for each input text."""
    texts = json.loads(request.content)["input"]
    if isinstance(texts, str):
        texts = [texts]
    return httpx.Response(
        200,
        json={
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector_of(t)}
                for i, t in enumerate(texts)
            ],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 9, "total_tokens": 9},
        },
    )


def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Provider retries back off 10 ms first (the retries, not their pauses, are under test)."""
    monkeypatch.setattr(
        retry, "ProviderBackoff", functools.partial(retry.ProviderBackoff, initial=0.01)
    )
