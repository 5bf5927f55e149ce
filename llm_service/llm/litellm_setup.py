"""Import litellm once, offline-safe: pinned local prices, local tokenizer files, no noise."""

from __future__ import annotations

import importlib.util
import logging
import os
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from llm_service.llm.litellm_patches import install_tool_call_guards
from llm_service.llm.litellm_quiet import install_quiet_calls
from llm_service.llm.send_gate import install_send_gate
from llm_service.settings import get_settings


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
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizers = _tokenizer_dir()
    if tokenizers is not None:
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(tokenizers))
    import litellm

    litellm.suppress_debug_info = True
    litellm.num_retries = 0
    litellm.telemetry = False
    install_tool_call_guards()
    install_quiet_calls()
    install_send_gate()
    _apply_transport(litellm, get_settings().llm_http_transport)
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    return litellm


def use_transport(transport: str) -> None:
    """litellm's HTTP transport for provider calls: "aiohttp" (production) or "httpx" (the one
    respx intercepts); cached clients built for the other one are dropped."""
    _apply_transport(load_litellm(), transport)


def _apply_transport(litellm: ModuleType, transport: str) -> None:
    disable = transport == "httpx"
    # The environment variable overrides the attribute inside litellm: keep both in step.
    wanted_env = "true" if disable else "false"
    if getattr(litellm, "disable_aiohttp_transport", None) is disable and (
        os.environ.get("DISABLE_AIOHTTP_TRANSPORT") == wanted_env
    ):
        return
    setattr(litellm, "disable_aiohttp_transport", disable)  # noqa: B010 - untyped module
    os.environ["DISABLE_AIOHTTP_TRANSPORT"] = wanted_env
    cache = getattr(litellm, "in_memory_llm_clients_cache", None)
    if cache is not None:
        cache.flush_cache()
