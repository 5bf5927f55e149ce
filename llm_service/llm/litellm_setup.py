"""Import litellm once, offline-safe: pinned local prices, local tokenizer files, no noise."""

from __future__ import annotations

import importlib.util
import logging
import os
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from llm_service.llm.litellm_patches import install_tool_call_guards


def _tokenizer_dir() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
    return folder if folder.is_dir() else None


@lru_cache(maxsize=1)
def load_litellm() -> ModuleType:
    """litellm, configured so that nothing it does at import or call time touches the network."""
    # The bundled price map, never a download that could replace prices under a running ceiling.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    # httpx transport: one transport everywhere, and the one respx intercepts in tests.
    os.environ["DISABLE_AIOHTTP_TRANSPORT"] = "true"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizers = _tokenizer_dir()
    if tokenizers is not None:
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(tokenizers))
    import litellm

    litellm.suppress_debug_info = True
    litellm.disable_aiohttp_transport = True
    litellm.num_retries = 0
    litellm.telemetry = False
    install_tool_call_guards()
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    return litellm
