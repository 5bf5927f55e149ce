"""After warm-up the first call loads no tokenizer encoding (observed, not timed).

Each check runs in a fresh interpreter: in this test process another test may already have
loaded the encodings, which would make the check pass for the wrong reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

_PROBE = textwrap.dedent(
    """
    import json, sys
    import tiktoken.load, tiktoken_ext.openai_public as public
    from llm_service.llm.warmup import warm_up
    from llm_service.llm.litellm_setup import load_litellm
    from llm_service.settings import Settings

    settings = Settings(llm_model="openai/gpt-4o-mini", embedding_model="local")
    if sys.argv[1] == "warm":
        warm_up(settings)
    litellm = load_litellm()
    loads = []
    real = tiktoken.load.load_tiktoken_bpe

    def counting(*args, **kwargs):
        loads.append(str(args[0] if args else kwargs))
        return real(*args, **kwargs)

    tiktoken.load.load_tiktoken_bpe = counting
    public.load_tiktoken_bpe = counting
    litellm.token_counter(
        model=settings.llm_model, messages=[{"role": "user", "content": "first request"}]
    )
    print(json.dumps(loads))
    """
)


def _loads_on_first_call(mode: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    )
    loads: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loads


def test_without_warm_up_the_first_call_loads_an_encoding() -> None:
    assert _loads_on_first_call("cold")  # the probe can see a load


def test_after_warm_up_the_first_call_loads_no_encoding() -> None:
    assert _loads_on_first_call("warm") == []
